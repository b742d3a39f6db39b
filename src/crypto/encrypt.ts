import { pipeline, type Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import type { PublicKey } from 'openpgp';
import { armorTransform } from './armor.js';
import { nativeSessionKey, seipdBytes, seipdTransform, sessionKeyPacket, type NativeSessionKey } from './native.js';
import { encryptionTargetOf, type EncryptionTarget, type NativeTarget } from './recipient-key.js';

/**
 * Encrypt once, address many: the content is encrypted a single time under a fresh session key (one SEIPD
 * packet), and each copy gets its own PKESK packets for its own recipient's keys only. A copy therefore
 * names no other recipient's key id (Bcc privacy), while the cost of an extra recipient is one PKESK.
 *
 * GnuPG 2.2 compatibility: always SEIPD v1 with PKESK v3 (never SEIPD v2, which GnuPG 2.2 cannot read),
 * binary literal data so decryption yields the exact bytes, and an armor checksum (GnuPG bug T7071 without it).
 *
 * The packets are written on node:crypto (native.ts); openpgp.js validates the keys and writes the PKESK for
 * key types native.ts does not handle.
 */

export type SessionKey = NativeSessionKey;

/** A session key every given key can receive. */
export async function newSessionKey(keys: readonly PublicKey[], now = new Date()): Promise<SessionKey> {
  return nativeSessionKey(await targetsOf(keys, now));
}

/** The SEIPD v1 packet (binary) carrying `plaintext` as binary literal data; streams in, streams out. */
export function encryptContent(plaintext: Readable, sessionKey: SessionKey): Readable {
  const encrypted = seipdTransform(sessionKey);
  pipeline(plaintext, encrypted, () => undefined);
  return encrypted;
}

/** The same SEIPD v1 packet for a message held in memory. */
export function encryptContentBytes(plaintext: Uint8Array, sessionKey: SessionKey): Buffer {
  return seipdBytes(plaintext, sessionKey);
}

/** Writes the PKESK of a key node:crypto handles: in this thread, or on a worker (pool.ts). */
export type KeyPacketWriter = (target: NativeTarget, sessionKey: SessionKey) => Buffer | Promise<Buffer>;

/** PKESK v3 packets giving `keys` (one recipient's keys) the session key. */
export async function sessionKeyPackets(sessionKey: SessionKey, keys: readonly PublicKey[], writeNative: KeyPacketWriter = sessionKeyPacket): Promise<Buffer> {
  const targets = await targetsOf(keys, new Date());
  return Buffer.concat(await Promise.all(targets.map((target) => packetFor(target, sessionKey, writeNative))));
}

async function packetFor(target: EncryptionTarget, sessionKey: SessionKey, writeNative: KeyPacketWriter): Promise<Buffer> {
  if (target.kind !== 'openpgp') return writeNative(target, sessionKey);
  const packets = await openpgp.encryptSessionKey({
    data: sessionKey.data,
    algorithm: openpgp.enums.read(openpgp.enums.symmetric, sessionKey.algorithm) as openpgp.enums.symmetricNames,
    encryptionKeys: [target.key],
    format: 'binary',
    config: { ...openpgp.config, aeadProtect: false },
  });
  return Buffer.from(packets);
}

function targetsOf(keys: readonly PublicKey[], now: Date): Promise<EncryptionTarget[]> {
  return Promise.all(keys.map((key) => encryptionTargetOf(key, now)));
}

/** ASCII armor with checksum, lines ending in `eol` (see armor.ts). */
export function armorMessage(binary: Readable, eol: '\r\n' | '\n'): Readable {
  const armored = armorTransform(eol);
  // pipeline, not pipe: an error in the ciphertext must end the armored stream too (destroying it).
  pipeline(binary, armored, () => undefined);
  return armored;
}
