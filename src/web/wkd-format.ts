/**
 * The pure half of the Web Key Directory (draft-koch-openpgp-webkey-service): where a key lives (the z-base-32
 * SHA-1 of the local part) and what is served there (the binary key with only that address's user ID).
 */
import { createHash } from 'node:crypto';
import { readKey, type Key } from 'openpgp';
import { canonicalDomain } from '../keys/address.js';

const ZBASE32 = 'ybndrfg8ejkmcpqxot1uwisza345h769';

/** z-base-32 (RFC 6189 §5.1.6 alphabet), most significant bits first; the last group is padded with zero bits. */
export function zbase32(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ZBASE32[(buffer >> bits) & 31];
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += ZBASE32[(buffer << (5 - bits)) & 31];
  return out;
}

/**
 * GnuPG lower-cases only ASCII letters before hashing (gpg-wks-client --print-wkd-hash leaves "Ä" alone), so the
 * directory does the same: otherwise a non-ASCII local part would be published where no client looks.
 */
export function wkdLocalPart(localPart: string): string {
  return localPart.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

/** The hu file name of a local part: z-base-32 of the SHA-1 of its (ASCII-lower-cased) UTF-8 bytes. */
export function wkdHash(localPart: string): string {
  return zbase32(createHash('sha1').update(wkdLocalPart(localPart), 'utf8').digest());
}

/** A hu name as gpg computes it: exactly 32 z-base-32 characters. */
export function isWkdHash(text: string): boolean {
  return /^[ybndrfg8ejkmcpqxot1uwisza345h769]{32}$/.test(text);
}

/**
 * The key as WKD serves it: binary, with only the user IDs whose address is `address` (compared as the
 * directory compares: local part ASCII-lower-cased, domain lower-cased); user attributes (photos) go too, as
 * gpg-wks-server keeps only the mailbox's user ID. Undefined when no user ID names the address.
 */
export async function keyForAddress(key: Key, address: string): Promise<Uint8Array | undefined> {
  const wanted = comparable(address);
  // A copy read from the key's own bytes: the caller's key (perhaps cached) keeps all its user IDs.
  const copy = await readKey({ binaryKey: key.write() });
  copy.users = copy.users.filter((user) => user.userID !== null && comparable(user.userID.email) === wanted);
  if (copy.users.length === 0) return undefined;
  return copy.write();
}

function comparable(address: string): string {
  const at = address.lastIndexOf('@');
  if (at <= 0) return '';
  return `${wkdLocalPart(address.slice(0, at))}@${canonicalDomain(address.slice(at + 1))}`;
}
