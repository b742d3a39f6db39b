import { createCipheriv, createECDH, createHash, diffieHellman, generateKeyPairSync, publicEncrypt, constants, type Cipher, type JsonWebKey, type KeyObject } from 'node:crypto';
import { secureRandomBytes } from '../util/random.js';
import { Transform } from 'node:stream';
import { PUBLIC_KEY, SYMMETRIC } from './algorithm-ids.js';
import { lengthOctets, mpi, packetHeader, PacketTag, PartialPacketWriter } from './packets.js';
import { AES_KEY_BYTES, KDF_HASHES, type EcdhTarget, type EncryptionTarget, type NativeTarget } from './recipient-key.js';

/**
 * OpenPGP encryption on node:crypto's native primitives: SEIPD v1 (AES-CFB with a SHA-1 MDC, RFC 9580 §5.13.1)
 * and PKESK v3 for RSA and ECDH (RFC 6637) keys. openpgp.js does the same through WebCrypto and web streams at
 * a fraction of the speed (its X25519 alone ran ~4× slower here); it still parses and validates every key, and
 * encrypts for the key types this file does not handle (see encrypt.ts). Every output is decrypted by GnuPG in
 * the tests.
 */

export interface NativeSessionKey {
  /** OpenPGP symmetric algorithm id (AES-128 or AES-256). */
  readonly algorithm: number;
  readonly data: Buffer;
}

/** AES-256 when every recipient lists it, else AES-128 (which every OpenPGP implementation reads): openpgp.js's rule. */
export function nativeSessionKey(targets: readonly EncryptionTarget[]): NativeSessionKey {
  const aes256 = targets.every((target) => target.preferredCiphers.includes(SYMMETRIC.aes256));
  const algorithm = aes256 ? SYMMETRIC.aes256 : SYMMETRIC.aes128;
  return { algorithm, data: secureRandomBytes(AES_KEY_BYTES[algorithm]!) };
}

/** The session key as PKESK v3 carries it: algorithm, key, two-octet checksum. */
function sessionKeyPayload(sessionKey: NativeSessionKey): Buffer {
  let sum = 0;
  for (const byte of sessionKey.data) sum = (sum + byte) & 0xffff;
  return Buffer.concat([Buffer.from([sessionKey.algorithm]), sessionKey.data, Buffer.from([sum >> 8, sum & 0xff])]);
}

/** One PKESK v3 packet giving `target` the session key. */
export function sessionKeyPacket(target: NativeTarget, sessionKey: NativeSessionKey): Buffer {
  const payload = sessionKeyPayload(sessionKey);
  const fields =
    target.kind === 'rsa'
      ? [Buffer.from([target.algorithm]), mpi(publicEncrypt({ key: target.publicKey, padding: constants.RSA_PKCS1_PADDING }, payload))]
      : [Buffer.from([PUBLIC_KEY.ecdh]), ...ecdhFields(target, payload)];
  const body = Buffer.concat([Buffer.from([3]), target.keyId, ...fields]);
  return Buffer.concat([packetHeader(PacketTag.pkesk, body.length), body]);
}

/** RFC 6637 §8: an ephemeral key agreement, a KDF over the shared secret, and the padded payload key-wrapped. */
function ecdhFields(target: EcdhTarget, payload: Buffer): Buffer[] {
  const { ephemeral, shared } = agree(target);
  const param = Buffer.concat([target.oid, Buffer.from([PUBLIC_KEY.ecdh, 3, 1, target.kdfHash, target.kdfCipher]), ANONYMOUS_SENDER, target.fingerprint]);
  const kekBytes = AES_KEY_BYTES[target.kdfCipher]!;
  const kek = createHash(KDF_HASHES[target.kdfHash]!).update(KDF_COUNTER).update(shared).update(param).digest().subarray(0, kekBytes);
  const wrap = createCipheriv(`id-aes${kekBytes * 8}-wrap`, kek, KEY_WRAP_IV);
  const wrapped = Buffer.concat([wrap.update(pkcs5Pad(payload)), wrap.final()]);
  return [mpi(ephemeral), Buffer.from([wrapped.length]), wrapped];
}

const ANONYMOUS_SENDER = Buffer.from('Anonymous Sender    ', 'latin1');
const KDF_COUNTER = Buffer.from([0, 0, 0, 1]);
const KEY_WRAP_IV = Buffer.from('a6a6a6a6a6a6a6a6', 'hex');

/**
 * The ephemeral public point as written in the PKESK, and the shared secret the KDF takes.
 *
 * The X25519 public point comes encoded from the key generation itself, never from `publicKey.export()`:
 * Node 20 exports a key holding the key's lock while it allocates, and a collection that frees the job which
 * generated the key then waits for that same lock. The thread deadlocked (seen under load in the bench, and
 * in a plain generate-and-export loop within 20 000 keys). Encoded inside the job, the public half never
 * becomes a key object; the agreement with the private half allocates nothing while it holds the lock.
 */
function agree(target: EcdhTarget): { ephemeral: Buffer; shared: Buffer } {
  if (target.curve === 'x25519') {
    const { privateKey, publicKey } = generateX25519WithJwkPublic('x25519', { publicKeyEncoding: { format: 'jwk' } });
    const shared = diffieHellman({ privateKey, publicKey: target.publicKey! });
    return { ephemeral: Buffer.concat([X25519_PREFIX, Buffer.from(publicKey.x!, 'base64url')]), shared };
  }
  const ecdh = createECDH(target.curve);
  const ephemeral = ecdh.generateKeys();
  return { ephemeral, shared: ecdh.computeSecret(target.point) };
}

const X25519_PREFIX = Buffer.from([0x40]);
/** `generateKeyPairSync` as Node runs it; @types/node has no overload for a JWK public half with a key-object private half. */
const generateX25519WithJwkPublic = generateKeyPairSync as unknown as (
  type: 'x25519',
  options: { publicKeyEncoding: { format: 'jwk' } },
) => { privateKey: KeyObject; publicKey: JsonWebKey };

function pkcs5Pad(data: Buffer): Buffer {
  const padding = 8 - (data.length % 8);
  return Buffer.concat([data, Buffer.alloc(padding, padding)]);
}

/** The literal data packet's fixed fields: binary format, no file name, the current time. */
function literalFields(now: Date): Buffer {
  const fields = Buffer.alloc(6);
  fields[0] = 0x62; // 'b': the bytes are returned as they are, no line-ending conversion
  fields.writeUInt32BE(Math.floor(now.getTime() / 1000), 2);
  return fields;
}

const MDC_HEADER = Buffer.from([0xc0 | PacketTag.mdc, 20]);
const ZERO_IV = Buffer.alloc(16);
const SEIPD_VERSION = Buffer.from([1]);

/** Encryption inside SEIPD v1: CFB with a zero IV over a random prefix (its last two octets repeated), then the packets. */
class SeipdCipher {
  private readonly cipher: Cipher;
  private readonly mdc = createHash('sha1');

  constructor(sessionKey: NativeSessionKey) {
    this.cipher = createCipheriv(`aes-${sessionKey.data.length * 8}-cfb`, sessionKey.data, ZERO_IV);
  }

  prefix(): Buffer {
    const random = secureRandomBytes(16);
    return this.update(Buffer.concat([random, random.subarray(14)]));
  }

  update(plaintext: Uint8Array): Buffer {
    this.mdc.update(plaintext);
    return this.cipher.update(plaintext);
  }

  /** The encrypted modification detection code packet, which closes the encrypted data. */
  final(): Buffer {
    this.mdc.update(MDC_HEADER);
    const mdc = Buffer.concat([MDC_HEADER, this.mdc.digest()]);
    return Buffer.concat([this.cipher.update(mdc), this.cipher.final()]);
  }
}

/** The SEIPD v1 packet carrying `plaintext` as one binary literal data packet, for a message held in memory. */
export function seipdBytes(plaintext: Uint8Array, sessionKey: NativeSessionKey, now = new Date()): Buffer {
  const fields = literalFields(now);
  const cipher = new SeipdCipher(sessionKey);
  const encrypted = [
    cipher.prefix(),
    cipher.update(packetHeader(PacketTag.literalData, fields.length + plaintext.length)),
    cipher.update(fields),
    cipher.update(plaintext),
    cipher.final(),
  ];
  const length = 1 + encrypted.reduce((sum, part) => sum + part.length, 0);
  return Buffer.concat([Buffer.from([0xc0 | PacketTag.seipd]), lengthOctets(length), SEIPD_VERSION, ...encrypted]);
}

/** The same packet as a stream transform: plaintext in, the binary SEIPD packet out, both in partial chunks. */
export function seipdTransform(sessionKey: NativeSessionKey, now = new Date()): Transform {
  const transform = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      literal.write(chunk);
      done();
    },
    flush(done) {
      literal.end();
      outer.write(cipher.final());
      outer.end();
      done();
    },
  });
  const cipher = new SeipdCipher(sessionKey);
  const outer = new PartialPacketWriter(PacketTag.seipd, (bytes) => transform.push(bytes));
  const literal = new PartialPacketWriter(PacketTag.literalData, (bytes) => outer.write(cipher.update(bytes)));
  outer.write(SEIPD_VERSION);
  outer.write(cipher.prefix());
  literal.write(literalFields(now));
  return transform;
}
