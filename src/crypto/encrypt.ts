import { Readable, pipeline } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import * as openpgp from 'openpgp';
import type { PublicKey } from 'openpgp';
import { armorTransform } from './armor.js';

/**
 * Encrypt once, address many: the content is encrypted a single time under a fresh session key (one SEIPD
 * packet), and each copy gets its own PKESK packets for its own recipient's keys only. A copy therefore
 * names no other recipient's key id (Bcc privacy), while the cost of an extra recipient is one PKESK.
 *
 * GnuPG 2.2 compatibility: always SEIPD v1 with PKESK v3 (openpgp.js would switch to SEIPD v2 when every key
 * advertises it, which GnuPG 2.2 cannot read), binary literal data so decryption yields the exact bytes,
 * and an armor checksum (GnuPG bug T7071 without it).
 */

export interface SessionKey {
  readonly data: Uint8Array;
  readonly algorithm: openpgp.enums.symmetricNames;
}

const config = { ...openpgp.config, aeadProtect: false, showComment: false, showVersion: false };

/** A session key every given key can receive (openpgp.js picks the cipher from the keys' preferences). */
export async function newSessionKey(keys: readonly PublicKey[]): Promise<SessionKey> {
  const { data, algorithm } = await openpgp.generateSessionKey({ encryptionKeys: [...keys], config });
  return { data, algorithm };
}

/** The parts of openpgp.js's packet API used here, which its typings keep private. */
interface SeipdPacket {
  packets: unknown;
  encrypt(algorithm: number, key: Uint8Array, cfg: typeof config): Promise<void>;
}
const SeipdClass = openpgp.SymEncryptedIntegrityProtectedDataPacket as unknown as {
  fromObject(options: { version: 1 }): SeipdPacket;
};

/** The SEIPD v1 packet (binary) carrying `plaintext` as binary literal data; streams in, streams out. */
export async function encryptContent(plaintext: Readable, sessionKey: SessionKey): Promise<Readable> {
  const web = Readable.toWeb(plaintext) as unknown as ReadableStream<Uint8Array>;
  const message = await openpgp.createMessage({ binary: web, format: 'binary' });
  const seipd = SeipdClass.fromObject({ version: 1 });
  seipd.packets = message.packets;
  const algorithm = openpgp.enums.symmetric[sessionKey.algorithm];
  await seipd.encrypt(algorithm, sessionKey.data, config);
  const out = new openpgp.PacketList<openpgp.AnyPacket>();
  out.push(seipd as unknown as openpgp.AnyPacket);
  return toNodeReadable(out.write() as unknown as ReadableStream<Uint8Array>);
}

/** The same SEIPD v1 packet for a message held in memory: no streams, several times cheaper for small messages. */
export async function encryptContentBytes(plaintext: Uint8Array, sessionKey: SessionKey): Promise<Uint8Array> {
  const message = await openpgp.createMessage({ binary: plaintext, format: 'binary' });
  const seipd = SeipdClass.fromObject({ version: 1 });
  seipd.packets = message.packets;
  await seipd.encrypt(openpgp.enums.symmetric[sessionKey.algorithm], sessionKey.data, config);
  const out = new openpgp.PacketList<openpgp.AnyPacket>();
  out.push(seipd as unknown as openpgp.AnyPacket);
  return out.write() as Uint8Array;
}

/** PKESK v3 packets giving `keys` (one recipient's keys) the session key. */
export async function sessionKeyPackets(sessionKey: SessionKey, keys: readonly PublicKey[]): Promise<Buffer> {
  const packets = await openpgp.encryptSessionKey({
    data: sessionKey.data,
    algorithm: sessionKey.algorithm,
    encryptionKeys: [...keys],
    format: 'binary',
    config,
  });
  return Buffer.from(packets);
}

/** ASCII armor with checksum, lines ending in `eol` (see armor.ts). */
export function armorMessage(binary: Readable, eol: '\r\n' | '\n'): Readable {
  const armored = armorTransform(eol);
  // pipeline, not pipe: an error in the ciphertext must end the armored stream too (destroying it).
  pipeline(binary, armored, () => undefined);
  return armored;
}

function toNodeReadable<T>(stream: ReadableStream<T> | Uint8Array | string): Readable {
  if (typeof stream === 'string' || stream instanceof Uint8Array) return Readable.from([stream]);
  return Readable.fromWeb(stream as unknown as WebReadableStream<T>, { objectMode: false });
}
