/** OpenPGP public-key validation: what may be stored at import, and what may be used at send time. */
import { createHash } from 'node:crypto';
import { enums, readKey, readKeys, unarmor, type Key, type PublicKey } from 'openpgp';
import { errorMessage, KeyRejectedError } from '../errors.js';
import { formatByteSize } from '../util/byte-size.js';
import { PacketFramingError, packetHeaders, packetTagAt, type FramedPacket } from './packet-reader.js';

export interface ValidatedKey {
  /** Primary key fingerprint, upper-case hex. */
  fingerprint: string;
  /** Primary key ID, 16 upper-case hex digits. */
  keyId: string;
  /** Addresses of the user IDs that carry a valid self-certification, as written in the key. */
  emails: string[];
  /** When the key stops being able to encrypt (primary or encryption subkey expiry); null = never. */
  expiresAt: Date | null;
  key: PublicKey;
}

/** The key is well-formed but cannot encrypt now (revoked, expired, no encryption subkey). */
export class UnusableKeyError extends KeyRejectedError {
  constructor(message: string, readonly fingerprint: string) {
    super(message);
  }
}

/** The input is (or holds) a secret key: never stored, and the uploader should hear exactly that. */
export class SecretKeyError extends KeyRejectedError {}

export type KeyUsability = { usable: true; expiresAt: Date | null } | { usable: false; reason: string };

/** What one import may bring in; checked before openpgp.js parses anything (its cost grows faster than the input). */
export interface KeyLimits {
  /** Most bytes of input, armored or binary (keys.max_key_bytes). */
  maxKeyBytes: number;
  /** Most user IDs per key (user attributes, e.g. photos, count as user IDs). */
  maxUserIds: number;
}

export const MAX_USER_IDS = 100;
export const DEFAULT_KEY_LIMITS: KeyLimits = { maxKeyBytes: 1024 * 1024, maxUserIds: MAX_USER_IDS };

/** One entry per key found in an armored block: validated, or refused with the reason. */
export type KeyValidation =
  | { ok: true; key: ValidatedKey }
  | { ok: false; fingerprint: string; error: KeyRejectedError };

/** Validates an armored block that must hold exactly one public key. Throws KeyRejectedError. */
export async function validatePublicKey(armored: string | Uint8Array, now = new Date()): Promise<ValidatedKey> {
  const keys = await readPublicKeys(armored);
  if (keys.length !== 1) throw new KeyRejectedError(`expected one public key, found ${keys.length}; import them one at a time`);
  return validateKey(keys[0]!, now);
}

/**
 * Validates every key of an armored block (a file may hold several). Throws KeyRejectedError only when the block
 * as a whole cannot be read; individual keys are refused in the result.
 */
export async function validatePublicKeys(armored: string | Uint8Array, now = new Date()): Promise<KeyValidation[]> {
  const keys = await readPublicKeys(armored);
  return Promise.all(
    keys.map(async (key): Promise<KeyValidation> => {
      try {
        return { ok: true, key: await validateKey(key, now) };
      } catch (error) {
        if (!(error instanceof KeyRejectedError)) throw error;
        return { ok: false, fingerprint: fingerprintOf(key), error };
      }
    }),
  );
}

/**
 * Parses armored (one or more blocks) or binary input into public keys, within the limits: the size and the user IDs
 * of each key are checked on the packet headers before openpgp.js parses anything. Refuses unreadable input and
 * secret keys (never stored).
 */
export async function readPublicKeys(input: string | Uint8Array, limits: KeyLimits = DEFAULT_KEY_LIMITS): Promise<Key[]> {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
  if (size > limits.maxKeyBytes) throw tooLarge(limits);
  const packets = await keyPackets(typeof input === 'string' ? Buffer.from(input) : input);
  if (packets.length === 0) throw new KeyRejectedError('no OpenPGP key found in the input');
  checkUserIdCounts(packets, limits.maxUserIds);
  let keys: Key[];
  try {
    keys = await readKeys({ binaryKeys: packets });
  } catch (error) {
    throw unreadable(errorMessage(error), error);
  }
  if (keys.length === 0) throw new KeyRejectedError('no OpenPGP key found in the input');
  if (keys.some((key) => key.isPrivate())) {
    throw new SecretKeyError('this is a secret (private) key; only the public key may be uploaded (gpg --export --armor ADDRESS)');
  }
  return keys;
}

/** The limits a parsed key must keep too: a merge with the stored copy can add user IDs and signatures. */
export function checkKeyLimits(key: Key, limits: KeyLimits = DEFAULT_KEY_LIMITS): void {
  if (key.users.length > limits.maxUserIds) throw tooManyUserIds(fingerprintOf(key), limits.maxUserIds);
  if (Buffer.byteLength(key.armor()) > limits.maxKeyBytes) {
    throw new KeyRejectedError(`key ${fingerprintOf(key)} with its stored copy merged in is larger than keys.max_key_bytes (${formatByteSize(limits.maxKeyBytes)})`);
  }
}

/** The packets of the input: binary keys as they are (gpg --export without --armor), armor blocks decoded. */
async function keyPackets(bytes: Uint8Array): Promise<Uint8Array> {
  if (startsWithKeyPacket(bytes)) return bytes;
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8');
  if (text.trim() === '') throw new KeyRejectedError('the input is empty: no OpenPGP key found');
  const blocks = text.match(ARMOR_BLOCK);
  if (!blocks) {
    if (packetTagAt(bytes) !== undefined) throw unreadable(`binary OpenPGP data that does not start with a key (its first packet has tag ${packetTagAt(bytes)})`);
    throw unreadable('no armor block (-----BEGIN PGP PUBLIC KEY BLOCK----- ... -----END PGP PUBLIC KEY BLOCK-----) found');
  }
  const decoded: Uint8Array[] = [];
  for (const block of blocks) decoded.push(await unarmorKeyBlock(block));
  return Buffer.concat(decoded);
}

async function unarmorKeyBlock(block: string): Promise<Uint8Array> {
  let unarmored: { type: enums.armor; data: unknown };
  try {
    unarmored = await unarmor(block);
  } catch (error) {
    throw unreadable(errorMessage(error), error);
  }
  if (unarmored.type !== enums.armor.publicKey && unarmored.type !== enums.armor.privateKey) {
    throw unreadable(`the armor block is a ${enums.read(enums.armor, unarmored.type)}, not a key`);
  }
  return unarmored.data as Uint8Array; // a Uint8Array whenever the input is a string
}

function startsWithKeyPacket(bytes: Uint8Array): boolean {
  const tag = packetTagAt(bytes);
  return tag === PacketTag.publicKey || tag === PacketTag.secretKey;
}

/** Counts user IDs per key on the packet headers alone; refuses a key with more than `max`. */
function checkUserIdCounts(packets: Uint8Array, max: number): void {
  let primary: FramedPacket | undefined;
  let userIds = 0;
  try {
    for (const header of packetHeaders(packets)) {
      if (header.tag === PacketTag.publicKey || header.tag === PacketTag.secretKey) {
        primary = header;
        userIds = 0;
      } else if (header.tag === PacketTag.userId || header.tag === PacketTag.userAttribute) {
        userIds += 1;
        if (userIds > max) throw tooManyUserIds(primary ? nameOfKey(packets, primary) : 'in the input', max);
      }
    }
  } catch (error) {
    if (error instanceof PacketFramingError) throw unreadable(error.message, error);
    throw error;
  }
}

/** A v4 public key's fingerprint from its packet (RFC 4880 §12.2); other keys are named vaguely ("key in the input"). */
function nameOfKey(packets: Uint8Array, header: FramedPacket): string {
  const body = packets.subarray(header.bodyStart, header.end);
  if (header.tag !== PacketTag.publicKey || body[0] !== 4) return 'in the input';
  const prefix = Buffer.from([0x99, body.length >> 8, body.length & 0xff]);
  return createHash('sha1').update(prefix).update(body).digest('hex').toUpperCase();
}

const PacketTag = { secretKey: 5, publicKey: 6, userId: 13, userAttribute: 17 } as const;

function tooLarge(limits: KeyLimits): KeyRejectedError {
  return new KeyRejectedError(`the key is larger than keys.max_key_bytes (${formatByteSize(limits.maxKeyBytes)})`);
}

function tooManyUserIds(fingerprint: string, max: number): KeyRejectedError {
  return new KeyRejectedError(`key ${fingerprint} has more than ${max} user IDs; at most ${max} are accepted per key`);
}

function unreadable(detail: string, cause?: unknown): KeyRejectedError {
  return new KeyRejectedError(`not a readable OpenPGP public key: ${detail}`, cause === undefined ? undefined : { cause });
}

/** Everything an import checks on one parsed key. Throws KeyRejectedError naming the reason. */
export async function validateKey(key: Key, now = new Date()): Promise<ValidatedKey> {
  const fingerprint = fingerprintOf(key);
  if (key.isPrivate()) throw new SecretKeyError(`key ${fingerprint} is a secret key; only the public key may be uploaded`);
  const version = key.keyPacket.version;
  if (version !== 4) {
    throw new KeyRejectedError(
      `key ${fingerprint} is an OpenPGP v${version} key; mail encrypted to it would need SEIPDv2, which GnuPG 2.2 cannot read. Upload a v4 key`,
    );
  }
  const usability = await usableEncryptionKey(key, now);
  if (!usability.usable) throw new UnusableKeyError(`key ${fingerprint} ${usability.reason}`, fingerprint);
  return {
    fingerprint,
    keyId: key.getKeyID().toHex().toUpperCase(),
    emails: await selfCertifiedEmails(key, now),
    expiresAt: usability.expiresAt,
    key: key as PublicKey,
  };
}

/**
 * Whether the key can encrypt at `now`. Used at import and again at send time, because a stored key can expire
 * while it sits in the store. The reason reads after the key's fingerprint ("key X is revoked").
 */
export async function usableEncryptionKey(key: Key, now = new Date()): Promise<KeyUsability> {
  if (await key.isRevoked(undefined, undefined, now)) return { usable: false, reason: 'is revoked' };
  const primaryExpiry = await expiryOf(key);
  if (primaryExpiry !== null && primaryExpiry <= now) return { usable: false, reason: `expired on ${primaryExpiry.toISOString()}` };
  try {
    await key.verifyPrimaryKey(now);
  } catch (error) {
    return { usable: false, reason: `has no valid self-signature: ${errorMessage(error)}` };
  }
  let encryptionKey;
  try {
    encryptionKey = await key.getEncryptionKey(undefined, now);
  } catch (error) {
    return {
      usable: false,
      reason: `has no usable encryption (sub)key (missing, expired, revoked or too weak): ${errorMessage(error)}`,
    };
  }
  const subkeyExpiry = encryptionKey === key ? null : normaliseExpiry(await encryptionKey.getExpirationTime(now));
  return { usable: true, expiresAt: earliest(primaryExpiry, subkeyExpiry) };
}

/**
 * A key as stored (armored) and whether it can encrypt now: what the key directory uses at send time and what
 * `lacre keys list|show` report. A copy that cannot be read is unusable, with the reason.
 */
export async function readStoredKey(armored: string, now = new Date()): Promise<{ key: PublicKey | null; usability: KeyUsability }> {
  let key: PublicKey;
  try {
    key = (await readKey({ armoredKey: armored })) as PublicKey;
  } catch (error) {
    return { key: null, usability: { usable: false, reason: `cannot be read from the store: ${errorMessage(error)}` } };
  }
  return { key, usability: await usableEncryptionKey(key, now) };
}

/** openpgp.js reads only the first armor block of a text; files often hold several (cat *.asc). */
const ARMOR_BLOCK = /-----BEGIN PGP [A-Z ]+-----[\s\S]*?-----END PGP [A-Z ]+-----/g;

export function fingerprintOf(key: Key): string {
  return key.getFingerprint().toUpperCase();
}

async function selfCertifiedEmails(key: Key, now: Date): Promise<string[]> {
  const emails: string[] = [];
  for (const user of key.users) {
    const email = user.userID?.email;
    if (!email) continue;
    const valid = await user.verify(now).then(
      () => true,
      () => false,
    );
    if (valid && !emails.includes(email)) emails.push(email);
  }
  return emails;
}

async function expiryOf(key: Key): Promise<Date | null> {
  try {
    return normaliseExpiry(await key.getExpirationTime());
  } catch {
    return null; // no valid self-signature: verifyPrimaryKey reports it
  }
}

function normaliseExpiry(value: Date | number | null): Date | null {
  return value instanceof Date ? value : null;
}

function earliest(a: Date | null, b: Date | null): Date | null {
  if (a === null) return b;
  if (b === null) return a;
  return a <= b ? a : b;
}
