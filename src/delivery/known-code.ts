import { createHash } from 'node:crypto';

/**
 * SHA-256 over the source text of functions, in order. Lacre leans on a few of nodemailer's internals (its DATA
 * escaping, its pool's `send`); each use is checked against the hash of the version it was written for, so a
 * nodemailer release that changes them makes Lacre fall back to the public path instead of misbehaving.
 */
export function sourceHash(...functions: readonly unknown[]): string {
  const hash = createHash('sha256');
  for (const fn of functions) hash.update(String(fn)).update('\0');
  return hash.digest('hex');
}
