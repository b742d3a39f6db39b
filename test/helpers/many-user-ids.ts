/**
 * Keys with many user IDs, made by openpgp.js with its default key type (v4, Ed25519 + Curve25519 legacy: what
 * GnuPG 2.2 reads; see DESIGN). gpg would take one process per user ID.
 */
import { generateKey, readKey } from 'openpgp';

export interface ManyUserIdKey {
  fingerprint: string;
  publicArmored: string;
}

/** A key with `count` user IDs, user0@domain ... user{count-1}@domain. */
export async function keyWithUserIds(count: number, domain = 'example.org'): Promise<ManyUserIdKey> {
  const userIDs = Array.from({ length: count }, (_, index) => ({ name: `User ${index}`, email: `user${index}@${domain}` }));
  const { publicKey } = await generateKey({ userIDs, format: 'armored' });
  const key = await readKey({ armoredKey: publicKey });
  return { fingerprint: key.getFingerprint().toUpperCase(), publicArmored: publicKey };
}

/** The same key (same fingerprint) carrying only the user IDs from `start` to before `end`, armored. */
export async function withUserIdsOnly(source: ManyUserIdKey, start: number, end: number): Promise<string> {
  const copy = await readKey({ armoredKey: source.publicArmored });
  copy.users = copy.users.slice(start, end);
  return copy.armor();
}
