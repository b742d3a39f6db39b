/**
 * What the key service accepts: an uploaded key checked into one of the stable refusal codes (README "Key service
 * API"), or the key and the address it is published for. Pure apart from the clock: no database, no network.
 */
import type { Key, PublicKey } from 'openpgp';
import { KeyRejectedError } from '../errors.js';
import { DEFAULT_KEY_LIMITS, readPublicKeys, SecretKeyError, usableEncryptionKey, validateKey } from '../crypto/keys.js';
import { canonicalAddress, canonicalDomain, InvalidAddressError, normaliseAddress, parseAddress } from '../keys/address.js';
import { WebError } from './errors.js';

export interface UploadPolicy {
  /** keys.domains: the domains whose users may publish keys. */
  readonly domains: readonly string[];
  /** keys.max_key_bytes. */
  readonly maxKeyBytes: number;
  readonly localPartCaseSensitive: boolean;
}

export interface AcceptedUpload {
  /** The address the key is published for, as its user ID spells it (domain an A-label). */
  readonly email: string;
  readonly fingerprint: string;
  readonly key: PublicKey;
  readonly expiresAt: Date | null;
}

/** The smallest RSA modulus accepted: smaller ones are breakable (NIST SP 800-131A). */
export const MIN_RSA_BITS = 2048;

/** Checks an upload (armored or binary) for `email` (or the key's one served address); throws WebError. */
export async function checkUpload(input: string | Uint8Array, email: string | undefined, policy: UploadPolicy, now: Date): Promise<AcceptedUpload> {
  const wanted = email === undefined ? undefined : servedAddress(email, policy);
  const key = await readOneKey(input, policy.maxKeyBytes);
  await refuseUnusable(key, now);
  const validated = await validateKey(key, now).catch((error: unknown) => {
    if (error instanceof SecretKeyError) throw secretKey();
    if (error instanceof KeyRejectedError) throw notAKey();
    throw error;
  });
  const address = wanted === undefined ? onlyServedAddress(validated.emails, policy) : addressInKey(wanted, validated.emails, policy);
  return { email: address, fingerprint: validated.fingerprint, key: validated.key, expiresAt: validated.expiresAt };
}

/** The address a request names, canonical, when it is an address of a served domain; throws WebError. */
export function servedAddress(input: string, policy: Pick<UploadPolicy, 'domains'>): string {
  let address: string;
  try {
    address = canonicalAddress(input);
  } catch (error) {
    if (error instanceof InvalidAddressError) throw new WebError(400, 'invalid-address', 'This is not a valid email address.');
    throw error;
  }
  if (!isServed(address, policy)) throw domainNotServed(address);
  return address;
}

async function readOneKey(input: string | Uint8Array, maxKeyBytes: number): Promise<Key> {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
  if (size > maxKeyBytes) throw new WebError(413, 'too-large', 'The key is larger than this service accepts ({limit} bytes).', { limit: maxKeyBytes });
  let keys: Key[];
  try {
    keys = await readPublicKeys(input, { ...DEFAULT_KEY_LIMITS, maxKeyBytes });
  } catch (error) {
    if (error instanceof SecretKeyError) throw secretKey();
    if (error instanceof KeyRejectedError) throw notAKey();
    throw error;
  }
  if (keys.length !== 1) throw new WebError(400, 'not-a-key', 'Upload exactly one public key; this holds {count}.', { count: keys.length });
  const key = keys[0]!;
  if (key.keyPacket.version !== 4) throw new WebError(400, 'not-a-key', 'Only version 4 OpenPGP keys are accepted (GnuPG 2.2 cannot read mail encrypted to newer ones).');
  if (isWeak(key)) {
    throw new WebError(400, 'weak-algorithm', 'The key uses a weak algorithm (RSA below 2048 bits, DSA or ElGamal); create a new key with gpg --full-generate-key.');
  }
  return key;
}

/** Revoked, expired, or cannot encrypt: in that order, the first that applies. */
async function refuseUnusable(key: Key, now: Date): Promise<void> {
  if (await key.isRevoked(undefined, undefined, now)) throw new WebError(400, 'revoked', 'The key has been revoked.');
  const expiry = await key.getExpirationTime().catch(() => null);
  if (expiry instanceof Date && expiry <= now) throw new WebError(400, 'expired', 'The key has expired.');
  const usability = await usableEncryptionKey(key, now);
  if (!usability.usable) throw new WebError(400, 'no-encryption-subkey', 'The key has no usable encryption subkey.');
}

/**
 * A weak primary key sinks the whole key; subkeys only when none of them is strong (a strong encryption subkey
 * beside an old one is still checked for usability afterwards).
 */
function isWeak(key: Key): boolean {
  const subkeys = key.getSubkeys();
  return isWeakAlgorithm(key.getAlgorithmInfo()) || (subkeys.length > 0 && subkeys.every((subkey) => isWeakAlgorithm(subkey.getAlgorithmInfo())));
}

function isWeakAlgorithm(info: { algorithm: string; bits?: number }): boolean {
  if (info.algorithm === 'dsa' || info.algorithm === 'elgamal') return true;
  return info.algorithm.startsWith('rsa') && (info.bits ?? 0) < MIN_RSA_BITS;
}

/** With no address given, the key must name exactly one address of a served domain. */
function onlyServedAddress(keyEmails: readonly string[], policy: UploadPolicy): string {
  const addresses = validAddresses(keyEmails);
  if (addresses.length === 0) throw addressNotInKey();
  const served = addresses.filter((address) => isServed(address, policy));
  if (served.length === 0) throw domainNotServed(addresses[0]!);
  if (served.length > 1) {
    throw new WebError(400, 'invalid-request', 'The key has several addresses of this service ({addresses}); say which one with "email".', {
      addresses: served.join(', '),
    });
  }
  return served[0]!;
}

function addressInKey(wanted: string, keyEmails: readonly string[], policy: UploadPolicy): string {
  const compare = (address: string): string => normaliseAddress(address, { localPartCaseSensitive: policy.localPartCaseSensitive });
  const match = validAddresses(keyEmails).find((address) => compare(address) === compare(wanted));
  if (match === undefined) throw addressNotInKey();
  return match;
}

function validAddresses(emails: readonly string[]): string[] {
  const addresses: string[] = [];
  for (const email of emails) {
    try {
      const address = canonicalAddress(email);
      if (!addresses.includes(address)) addresses.push(address);
    } catch (error) {
      if (!(error instanceof InvalidAddressError)) throw error;
    }
  }
  return addresses;
}

function isServed(address: string, policy: Pick<UploadPolicy, 'domains'>): boolean {
  const domain = parseAddress(address).domain;
  return policy.domains.some((served) => canonicalDomain(served) === domain);
}

function secretKey(): WebError {
  return new WebError(400, 'secret-key', 'This is a secret (private) key. Upload only the public key: gpg --export --armor ADDRESS.');
}

function notAKey(): WebError {
  return new WebError(400, 'not-a-key', 'This is not an OpenPGP public key.');
}

function addressNotInKey(): WebError {
  return new WebError(400, 'address-not-in-key', 'The key has no valid user ID for this address.');
}

function domainNotServed(address: string): WebError {
  return new WebError(400, 'domain-not-served', 'This service does not publish keys for the domain of {address}.', { address });
}
