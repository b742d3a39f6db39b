import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as openpgp from 'openpgp';
import { isEncryptedOpenPgp, PacketFramingError, packetHeaders, packetTagAt, readNewLength, readPacketHeader } from '../../src/crypto/packet-reader.js';
import { lengthOctets, packetHeader, PartialPacketWriter } from '../../src/crypto/packets.js';
import { createGpgHome, encryptWithGpg, generateKey, gpgOk, type GpgHome } from '../helpers/gpg.js';

/** An old-format (RFC 4880 §4.2.1) header: length type 0, 1, 2 by the length's size, or 3 (indeterminate). */
function oldHeader(tag: number, length: number | 'indeterminate'): Buffer {
  if (length === 'indeterminate') return Buffer.from([0x80 | (tag << 2) | 3]);
  if (length < 0x100) return Buffer.from([0x80 | (tag << 2), length]);
  if (length < 0x10000) return Buffer.from([0x80 | (tag << 2) | 1, length >> 8, length & 0xff]);
  const header = Buffer.from([0x80 | (tag << 2) | 2, 0, 0, 0, 0]);
  header.writeUInt32BE(length, 1);
  return header;
}

const packet = (tag: number, body: Buffer) => Buffer.concat([packetHeader(tag, body.length), body]);
/** A PKESK v3 for an RSA-4096 key: version, key id, algorithm, one 4096-bit MPI (524 bytes of body). */
const rsa4096Pkesk = () => packet(1, Buffer.concat([Buffer.from([3]), randomBytes(8), Buffer.from([1, 0x10, 0x00, 0x80]), randomBytes(511)]));
const skesk = () => packet(3, Buffer.from([4, 9, 3, 2, ...randomBytes(9)]));
const seipd = (bytes = 100) => packet(18, Buffer.concat([Buffer.from([1]), randomBytes(bytes)]));

/** A SEIPD packet written with partial body lengths of 512 bytes, as Lacre streams big messages. */
function partialSeipd(bytes: number): Buffer {
  const out: Buffer[] = [];
  const writer = new PartialPacketWriter(18, (piece) => out.push(piece), 9);
  writer.write(Buffer.from([1]));
  writer.write(randomBytes(bytes));
  writer.end();
  return Buffer.concat(out);
}

describe('OpenPGP packet reader', () => {
  describe('headers', () => {
    for (const length of [0, 1, 191, 192, 193, 8383, 8384, 65535, 65536, 2 ** 32 - 1]) {
      it(`reads a new-format definite length of ${length}`, () => {
        const header = Buffer.concat([Buffer.from([0xc0 | 18]), lengthOctets(length)]);
        assert.deepEqual(readPacketHeader(header, 0), { tag: 18, bodyOffset: header.length, length: { kind: 'definite', length } });
      });
    }

    for (const length of [0, 255, 256, 65535, 65536, 2 ** 32 - 1]) {
      it(`reads an old-format definite length of ${length}`, () => {
        const header = oldHeader(1, length);
        assert.deepEqual(readPacketHeader(header, 0), { tag: 1, bodyOffset: header.length, length: { kind: 'definite', length } });
      });
    }

    it('reads an old-format indeterminate length, and a new-format partial body length', () => {
      assert.deepEqual(readPacketHeader(oldHeader(9, 'indeterminate'), 0), { tag: 9, bodyOffset: 1, length: { kind: 'indeterminate' } });
      for (let power = 0; power <= 30; power++) {
        assert.deepEqual(readNewLength(Buffer.from([0xe0 | power]), 0), { length: { kind: 'partial', length: 2 ** power }, next: 1 });
      }
    });

    it('reads new-format tags up to 63 and old-format tags up to 15', () => {
      assert.equal(readPacketHeader(Buffer.from([0xff, 0]), 0)?.tag, 63);
      assert.equal(readPacketHeader(Buffer.from([0xbc, 0]), 0)?.tag, 15);
    });

    it('says nothing for a header cut short or a byte that starts no packet', () => {
      for (const cut of [Buffer.from([0xc1]), Buffer.from([0xc1, 0xc0]), Buffer.from([0xc1, 0xff, 0, 0, 0]), Buffer.from([0x85]), Buffer.from([0x86, 0, 0, 0]), Buffer.alloc(0)]) {
        assert.equal(readPacketHeader(cut, 0), undefined, cut.toString('hex'));
      }
      for (let first = 0; first < 0x80; first++) assert.equal(readPacketHeader(Buffer.from([first, 1, 2, 3, 4, 5]), 0), undefined);
    });
  });

  describe('an encrypted message', () => {
    let home: GpgHome;
    before(async () => {
      home = await createGpgHome();
      await generateKey(home, { email: 'alice@example.test' });
      await generateKey(home, { email: 'bob@example.test', algo: 'rsa3072' });
    });
    after(() => home.remove());

    it('is recognised as GnuPG writes it: public-key and symmetric, with its old-format session-key packets', async () => {
      const publicKey = await gpgOk(home, ['--batch', '--trust-model', 'always', '--encrypt', '-r', 'alice@example.test', '-r', 'bob@example.test'], 'hello');
      const symmetric = await gpgOk(home, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', 'x', '--symmetric'], 'hello');
      for (const message of [publicKey, symmetric]) {
        assert.equal(message[0]! & 0x40, 0, 'GnuPG 2.2 writes the session-key packet in the old format');
        assert.equal(isEncryptedOpenPgp(message, true), true);
      }
      assert.ok((await encryptWithGpg(home, ['alice@example.test'], 'hello')).toString().startsWith('-----BEGIN PGP MESSAGE-----'));
    });

    it('is recognised as openpgp.js writes it (SEIPDv1, and SEIPDv2 with SKESK v6)', async () => {
      for (const config of [{}, { aeadProtect: true }]) {
        const message = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'hello' }), passwords: ['x'], format: 'binary', config });
        assert.equal(isEncryptedOpenPgp(message, true), true, JSON.stringify(config));
      }
    });

    it('is recognised with partial body lengths on the data packet, whole and through any window', () => {
      const message = Buffer.concat([skesk(), rsa4096Pkesk(), partialSeipd(5000)]);
      assert.ok(message.includes(Buffer.from([0xe9])), 'written in 512-byte partial chunks');
      assert.equal(isEncryptedOpenPgp(message, true), true);
      const dataStart = message.length - partialSeipd(5000).length;
      for (let cut = dataStart + 3; cut < message.length; cut += 37) {
        assert.equal(isEncryptedOpenPgp(message.subarray(0, cut), false), true, `window of ${cut} bytes`);
        assert.equal(isEncryptedOpenPgp(message.subarray(0, cut), true), false, `${cut} bytes, cut short`);
      }
    });

    it('is recognised with old-format headers (tags up to 15: SED for the data), an indeterminate length included', () => {
      const pkesk = rsa4096Pkesk().subarray(3);
      const data = randomBytes(300);
      assert.equal(isEncryptedOpenPgp(Buffer.concat([oldHeader(1, pkesk.length), pkesk, oldHeader(9, data.length), data]), true), true);
      assert.equal(isEncryptedOpenPgp(Buffer.concat([oldHeader(1, pkesk.length), pkesk, oldHeader(9, 'indeterminate'), data]), true), true);
      assert.equal(isEncryptedOpenPgp(Buffer.concat([oldHeader(3, 13), skesk().subarray(2), oldHeader(9, 70000), randomBytes(70000)]), true), true);
      assert.equal(isEncryptedOpenPgp(Buffer.concat([oldHeader(3, 13), skesk().subarray(2), seipd()]), true), true, 'old then new format');
    });

    it('is recognised with 100 RSA-4096 recipients (about 52 KiB of session-key packets)', () => {
      const message = Buffer.concat([...Array.from({ length: 100 }, rsa4096Pkesk), seipd(2000)]);
      assert.ok(message.length > 52 * 1024);
      assert.equal(isEncryptedOpenPgp(message, true), true);
      assert.equal(isEncryptedOpenPgp(message.subarray(0, message.length - 1000), false), true);
    });
  });

  describe('what is not an encrypted message', () => {
    const literal = packet(11, Buffer.from('b\x00\x00\x00\x00\x00hello', 'latin1'));
    const cases: Array<[string, Buffer]> = [
      ['nothing', Buffer.alloc(0)],
      ['a data packet without a session-key packet', seipd()],
      ['session-key packets without a data packet', Buffer.concat([rsa4096Pkesk(), skesk()])],
      ['a literal data packet (a plaintext OpenPGP message)', literal],
      ['a session key, then literal data', Buffer.concat([skesk(), literal])],
      ['a session key, then compressed data', Buffer.concat([skesk(), packet(8, Buffer.from([1, 2, 3]))])],
      ['a one-pass signature first (a signed message)', Buffer.concat([packet(4, Buffer.alloc(13, 3)), literal, packet(2, Buffer.alloc(40, 4))])],
      ['a public key', packet(6, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 22]), randomBytes(40)]))],
      ['a packet after the encrypted data', Buffer.concat([skesk(), seipd(), literal])],
      ['a session-key packet after the encrypted data', Buffer.concat([skesk(), seipd(), skesk()])],
      ['a session-key packet of unknown version', Buffer.concat([packet(1, Buffer.from([2, ...randomBytes(30)])), seipd()])],
      ['an empty session-key packet', Buffer.concat([packet(3, Buffer.alloc(0)), seipd()])],
      ['a SEIPD of unknown version', Buffer.concat([skesk(), packet(18, Buffer.from([3, ...randomBytes(30)]))])],
      ['an empty SEIPD', Buffer.concat([skesk(), packet(18, Buffer.alloc(0))])],
      ['a session-key packet with a partial length', Buffer.concat([Buffer.from([0xc3, 0xe0 | 4]), Buffer.alloc(16, 4), Buffer.from([0]), seipd()])],
      ['a session-key packet with an indeterminate length', Buffer.concat([oldHeader(3, 'indeterminate'), skesk().subarray(2), seipd()])],
      ['a session-key packet longer than the message', Buffer.concat([Buffer.from([0xc3, 0xff, 0xff, 0xff, 0xff, 0xff, 4]), seipd()])],
      ['a data packet longer than the message', Buffer.concat([skesk(), Buffer.from([0xd2, 0xff, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3])])],
      ['a data packet shorter than the message', Buffer.concat([skesk(), packet(18, Buffer.from([1, 2, 3])), Buffer.from([0])])],
      ['partial chunks that end without a final length', Buffer.concat([skesk(), Buffer.from([0xd2, 0xe1, 1, 2])])],
      ['an armored text', Buffer.from('-----BEGIN PGP MESSAGE-----\n\nhQEMA...')],
      ['plaintext', Buffer.from('Secret meeting at noon.')],
    ];
    for (const [name, bytes] of cases) {
      it(`says no to ${name}`, () => assert.equal(isEncryptedOpenPgp(bytes, true), false));
    }

    it('says no to a window that ends before the data packet shows its version', () => {
      const message = Buffer.concat([skesk(), rsa4096Pkesk(), seipd()]);
      const dataStart = message.length - seipd().length;
      for (let cut = 0; cut <= dataStart + 2; cut++) assert.equal(isEncryptedOpenPgp(message.subarray(0, cut), false), false, `window of ${cut}`);
      assert.equal(isEncryptedOpenPgp(message.subarray(0, dataStart + 3), false), true);
    });

    it('never throws, and says no to every strict prefix of a whole message', () => {
      const message = Buffer.concat([skesk(), rsa4096Pkesk(), partialSeipd(1500)]);
      for (let cut = 0; cut < message.length; cut++) assert.equal(isEncryptedOpenPgp(message.subarray(0, cut), true), false);
    });

    it('never throws on random bytes or on random damage to a real message', () => {
      const message = Buffer.concat([skesk(), rsa4096Pkesk(), partialSeipd(1500)]);
      for (let round = 0; round < 3000; round++) {
        const random = randomBytes(round % 300);
        assert.equal(typeof isEncryptedOpenPgp(random, round % 2 === 0), 'boolean');
        const damaged = Buffer.from(message);
        for (let i = 0; i < 1 + (round % 4); i++) damaged[Math.floor(Math.random() * 600)] = Math.floor(Math.random() * 256);
        assert.equal(typeof isEncryptedOpenPgp(damaged, round % 2 === 0), 'boolean');
      }
    });
  });
});

const tagsOf = (bytes: Uint8Array) => [...packetHeaders(bytes)].map((header) => header.tag);

describe('packetHeaders', () => {
  it('walks new-format packets of every definite length encoding', () => {
    const bodies = [Buffer.alloc(5, 1), Buffer.alloc(300, 2), Buffer.alloc(9000, 3)];
    const bytes = Buffer.concat(bodies.flatMap((body, index) => [packetHeader(13 + index, body.length), body]));
    const headers = [...packetHeaders(bytes)];
    assert.deepEqual(headers.map((header) => header.tag), [13, 14, 15]);
    assert.deepEqual(headers.map((header) => header.end - header.bodyStart), [5, 300, 9000]);
    assert.equal(headers.at(-1)!.end, bytes.length);
  });

  it('walks old-format packets (one, two and four length octets, and indeterminate)', () => {
    const bytes = Buffer.concat([
      Buffer.from([0x98, 2, 0xaa, 0xbb]), // tag 6, one-octet length
      Buffer.from([0xb5, 0, 3, 1, 2, 3]), // tag 13, two-octet length
      Buffer.from([0x8a, 0, 0, 0, 1, 9]), // tag 2, four-octet length
      Buffer.from([0xaf, 7, 7, 7]), // tag 11, indeterminate: to the end
    ]);
    assert.deepEqual(tagsOf(bytes), [6, 13, 2, 11]);
  });

  it('follows partial body lengths to the packet after them', () => {
    const chunks: Buffer[] = [];
    const writer = new PartialPacketWriter(18, (bytes) => chunks.push(bytes), 9);
    writer.write(Buffer.alloc(2000, 1));
    writer.end();
    const bytes = Buffer.concat([...chunks, packetHeader(13, 3), Buffer.from('abc')]);
    assert.deepEqual(tagsOf(bytes), [18, 13]);
  });

  it('refuses a truncated packet and a byte that is no packet header', () => {
    assert.throws(() => tagsOf(Buffer.concat([packetHeader(13, 10), Buffer.alloc(4)])), PacketFramingError);
    assert.throws(() => tagsOf(Buffer.from([0xc6, 0xff, 0, 0])), /cut off/);
    assert.throws(() => tagsOf(Buffer.from([0xc6, 0, 0x41])), /no packet header at byte 2/);
  });

  it('names the tag of a first octet, or nothing for text', () => {
    assert.equal(packetTagAt(Buffer.from([0x99])), 6);
    assert.equal(packetTagAt(Buffer.from([0xc6])), 6);
    assert.equal(packetTagAt(Buffer.from('-----BEGIN')), undefined);
    assert.equal(packetTagAt(Buffer.alloc(0)), undefined);
  });
});
