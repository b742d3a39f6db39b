/**
 * Secrets handed out once and kept only as hashes: box user tokens, trusted "service:token" pairs,
 * reservations, confirmation links. A token is random bytes in base64url; what is stored is the hex SHA-256
 * of its text (no salt needed: the tokens Lacre makes carry 256 bits, and configured ones are compared, never
 * looked up). A candidate is checked against stored hashes in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** 32 random bytes unless told otherwise. */
export const TOKEN_BYTES = 32;

export interface IssuedToken {
  /** Given to its holder once, never stored. */
  readonly token: string;
  /** What is stored: hashToken(token). */
  readonly hash: string;
}

/** A new token of `bytes` random bytes (base64url) with the hash to store for it. */
export function issueToken(bytes = TOKEN_BYTES): IssuedToken {
  const token = randomBytes(bytes).toString('base64url');
  return { token, hash: hashToken(token) };
}

/** The hex SHA-256 of a token's UTF-8 text: what is stored, and what a lookup by token searches for. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * True when `candidate` hashes to one of `stored` (hex SHA-256 each). Every stored hash is compared, in
 * constant time, so the time taken says nothing about which one (if any) matched; a malformed stored value
 * matches nothing.
 */
export function tokenMatches(candidate: string, stored: string | readonly string[]): boolean {
  const digest = Buffer.from(hashToken(candidate), 'hex');
  let match = false;
  for (const hash of typeof stored === 'string' ? [stored] : stored) {
    const known = Buffer.from(hash, 'hex');
    match = (known.length === digest.length && timingSafeEqual(known, digest)) || match;
  }
  return match;
}
