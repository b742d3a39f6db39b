/** OpenPGP public-key validation: what may be stored at import, and what may be used at send time. */
import { readKeys, type Key, type PublicKey } from 'openpgp';
import { errorMessage, KeyRejectedError } from '../errors.js';

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

export type KeyUsability = { usable: true; expiresAt: Date | null } | { usable: false; reason: string };

/** One entry per key found in an armored block: validated, or refused with the reason. */
export type KeyValidation =
  | { ok: true; key: ValidatedKey }
  | { ok: false; fingerprint: string; error: KeyRejectedError };

/** Validates an armored block that must hold exactly one public key. Throws KeyRejectedError. */
export async function validatePublicKey(armored: string, now = new Date()): Promise<ValidatedKey> {
  const keys = await readPublicKeys(armored);
  if (keys.length !== 1) throw new KeyRejectedError(`expected one public key, found ${keys.length}; import them one at a time`);
  return validateKey(keys[0]!, now);
}

/**
 * Validates every key of an armored block (a file may hold several). Throws KeyRejectedError only when the block
 * as a whole cannot be read; individual keys are refused in the result.
 */
export async function validatePublicKeys(armored: string, now = new Date()): Promise<KeyValidation[]> {
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

/** Parses an armored block into public keys. Refuses unreadable input and secret keys (never stored). */
export async function readPublicKeys(armored: string): Promise<Key[]> {
  const keys: Key[] = [];
  try {
    for (const block of armorBlocks(armored)) keys.push(...(await readKeys({ armoredKeys: block })));
  } catch (error) {
    throw new KeyRejectedError(`not a readable OpenPGP public key: ${errorMessage(error)}`, { cause: error });
  }
  if (keys.length === 0) throw new KeyRejectedError('no OpenPGP key found in the input');
  if (keys.some((key) => key.isPrivate())) {
    throw new KeyRejectedError('this is a secret (private) key; only the public key may be uploaded (gpg --export --armor ADDRESS)');
  }
  return keys;
}

/** Everything an import checks on one parsed key. Throws KeyRejectedError naming the reason. */
export async function validateKey(key: Key, now = new Date()): Promise<ValidatedKey> {
  const fingerprint = fingerprintOf(key);
  if (key.isPrivate()) throw new KeyRejectedError(`key ${fingerprint} is a secret key; only the public key may be uploaded`);
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

/** openpgp.js reads only the first armor block of a text; files often hold several (cat *.asc). */
function armorBlocks(text: string): string[] {
  const blocks = text.match(ARMOR_BLOCK);
  return blocks && blocks.length > 0 ? blocks : [text];
}

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
