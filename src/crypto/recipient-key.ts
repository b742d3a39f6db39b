import { createPublicKey, type KeyObject } from 'node:crypto';
import type { PublicKey } from 'openpgp';
import { HASH, PUBLIC_KEY, SYMMETRIC } from './algorithm-ids.js';

/**
 * A recipient's encryption (sub)key in the form node:crypto needs, resolved once per key with openpgp.js
 * (which verifies the self-signatures and picks the subkey) and then reused for every message.
 */
export type EncryptionTarget = RsaTarget | EcdhTarget | OpenPgpJsTarget;

/** Native PKESK encryption is possible for these. */
export type NativeTarget = RsaTarget | EcdhTarget;

interface TargetBase {
  /** Key ID of the encryption (sub)key: what the PKESK names. */
  readonly keyId: Buffer;
  /** Symmetric algorithms the key's primary user prefers (OpenPGP ids). */
  readonly preferredCiphers: readonly number[];
}

export interface RsaTarget extends TargetBase {
  readonly kind: 'rsa';
  readonly algorithm: number;
  readonly publicKey: KeyObject;
}

export interface EcdhTarget extends TargetBase {
  readonly kind: 'ecdh';
  /** node:crypto's name for the curve; 'x25519' for OpenPGP's legacy Curve25519. */
  readonly curve: string;
  /** The recipient's public point as node:crypto takes it (native X25519 bytes, or the SEC1 point). */
  readonly point: Buffer;
  /** X25519 only: the point as a KeyObject. */
  readonly publicKey: KeyObject | undefined;
  /** RFC 6637 KDF parameters: the curve OID as written (length byte first), hash and key-wrap cipher ids. */
  readonly oid: Buffer;
  readonly kdfHash: number;
  readonly kdfCipher: number;
  /** The (sub)key's v4 fingerprint, part of the KDF input. */
  readonly fingerprint: Buffer;
}

/** A key type left to openpgp.js (RFC 9580 X25519/X448, Brainpool curves, other KDF parameters). */
export interface OpenPgpJsTarget extends TargetBase {
  readonly kind: 'openpgp';
  readonly key: PublicKey;
}

/** OpenPGP curve names (openpgp.js) → node:crypto curve names. */
const CURVES: Record<string, string> = {
  curve25519Legacy: 'x25519',
  nistP256: 'prime256v1',
  nistP384: 'secp384r1',
  nistP521: 'secp521r1',
};

export const KDF_HASHES: Record<number, string> = {
  [HASH.sha256]: 'sha256',
  [HASH.sha384]: 'sha384',
  [HASH.sha512]: 'sha512',
};

export const AES_KEY_BYTES: Record<number, number> = {
  [SYMMETRIC.aes128]: 16,
  [SYMMETRIC.aes192]: 24,
  [SYMMETRIC.aes256]: 32,
};

interface Resolved {
  readonly target: EncryptionTarget;
  /** Resolve again from this moment (ms): the chosen subkey or the primary key expires then. */
  readonly validUntil: number;
}

const resolved = new WeakMap<PublicKey, Resolved>();

/**
 * How to encrypt to `key` at `now`. Throws (openpgp.js's error) when the key has no usable encryption key:
 * callers check usability before.
 */
export async function encryptionTargetOf(key: PublicKey, now = new Date()): Promise<EncryptionTarget> {
  const cached = resolved.get(key);
  if (cached && now.getTime() < cached.validUntil) return cached.target;
  const fresh = await resolve(key, now);
  resolved.set(key, fresh);
  return fresh.target;
}

async function resolve(key: PublicKey, now: Date): Promise<Resolved> {
  const encryptionKey = await key.getEncryptionKey(undefined, now);
  const { selfCertification } = await key.getPrimaryUser(now);
  const base: TargetBase = {
    keyId: Buffer.from(encryptionKey.getKeyID().toHex(), 'hex'),
    preferredCiphers: selfCertification.preferredSymmetricAlgorithms ?? [],
  };
  const expiries = await Promise.all([key.getExpirationTime(), encryptionKey === key ? null : encryptionKey.getExpirationTime(now)]);
  const validUntil = Math.min(...expiries.map((expiry) => (expiry instanceof Date ? expiry.getTime() : Infinity)));
  const packet = encryptionKey.keyPacket;
  const target = nativeTargetOf(packet.algorithm, packet.publicParams as PublicParams, packet, base) ?? { ...base, kind: 'openpgp', key };
  return { target, validUntil };
}

interface PublicParams {
  readonly n?: Uint8Array;
  readonly e?: Uint8Array;
  readonly oid?: { getName(): string; write(): Uint8Array };
  readonly Q?: Uint8Array;
  readonly kdfParams?: { hash: number; cipher: number };
}

function nativeTargetOf(
  algorithm: number,
  params: PublicParams,
  packet: { getFingerprintBytes(): Uint8Array | null; version: number },
  base: TargetBase,
): NativeTarget | undefined {
  if ((algorithm === PUBLIC_KEY.rsaEncryptSign || algorithm === PUBLIC_KEY.rsaEncrypt) && params.n && params.e) {
    const jwk = { kty: 'RSA', n: Buffer.from(params.n).toString('base64url'), e: Buffer.from(params.e).toString('base64url') };
    return { ...base, kind: 'rsa', algorithm, publicKey: createPublicKey({ key: jwk, format: 'jwk' }) };
  }
  if (algorithm !== PUBLIC_KEY.ecdh || !params.oid || !params.Q || !params.kdfParams || packet.version !== 4) return undefined;
  const curve = CURVES[params.oid.getName()];
  const { hash, cipher } = params.kdfParams;
  if (!curve || !KDF_HASHES[hash] || !AES_KEY_BYTES[cipher]) return undefined;
  const fingerprint = Buffer.from(packet.getFingerprintBytes()!);
  const common = { ...base, kind: 'ecdh' as const, curve, oid: Buffer.from(params.oid.write()), kdfHash: hash, kdfCipher: cipher, fingerprint };
  if (curve !== 'x25519') return { ...common, point: Buffer.from(params.Q), publicKey: undefined };
  // Legacy Curve25519 points are written with a 0x40 prefix before the native 32 bytes.
  const point = Buffer.from(params.Q.subarray(1));
  if (params.Q[0] !== 0x40 || point.length !== 32) return undefined;
  const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: point.toString('base64url') }, format: 'jwk' });
  return { ...common, point, publicKey };
}
