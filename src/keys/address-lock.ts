/**
 * The per-address lock every change of an address's confirmed key takes (the key service's confirmations and
 * requests, the admin's restore): a transaction-scoped PostgreSQL advisory lock, so the statement that follows it
 * in the same transaction reads the address after any other such change has committed.
 */
import type { Statement } from '../db/types.js';
import { canonicalAddress } from './address.js';

/** Lacre's class ("lacr"), then the address's lock key (`lockKey`). */
export const ADDRESS_LOCK_SQL = 'select pg_advisory_xact_lock(1818321778, hashtext($1))';

/**
 * One key for every spelling of an address: its domain as a lower-case A-label (a row stored with a Unicode domain,
 * from before addresses were canonicalised, locks as its A-label form does) and the local part lower-cased.
 */
export function lockKey(email: string): string {
  try {
    return canonicalAddress(email).toLowerCase();
  } catch {
    return email.toLowerCase();
  }
}

/** The statement that takes `email`'s lock until its transaction ends. */
export function addressLock(email: string): Statement {
  return { sql: ADDRESS_LOCK_SQL, params: [lockKey(email)] };
}

/**
 * The statements that take the locks of several addresses, once each and always in the same order (by the lower-cased
 * address), so two transactions locking overlapping addresses cannot deadlock.
 */
export function addressLocks(emails: Iterable<string>): Statement[] {
  const keys = [...new Set([...emails].map(lockKey))].sort();
  return keys.map((key) => ({ sql: ADDRESS_LOCK_SQL, params: [key] }));
}
