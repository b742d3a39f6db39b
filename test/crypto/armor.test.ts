import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import { armorBuffer, armorTransform, crc24 } from '../../src/crypto/armor.js';
import { isDataSafe } from '../../src/mime/data-safe.js';
import { createGpgHome, gpgOk } from '../helpers/gpg.js';

async function armorPieces(data: Buffer, chunkSize: number, eol: '\r\n' | '\n'): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunkSize) chunks.push(data.subarray(i, i + chunkSize));
  const out: Buffer[] = [];
  for await (const piece of Readable.from(chunks).pipe(armorTransform(eol))) out.push(piece as Buffer);
  return out;
}

async function armorStreamed(data: Buffer, chunkSize: number, eol: '\r\n' | '\n'): Promise<Buffer> {
  return Buffer.concat(await armorPieces(data, chunkSize, eol));
}

/** What a buffer marked safe for SMTP DATA promises: whole CRLF lines, none starting with '.', no other CR or LF. */
function assertDataSafe(piece: Buffer, context: string): void {
  const text = piece.toString('latin1');
  assert.ok(text.endsWith('\r\n'), `${context}: ends with CRLF`);
  for (const line of text.slice(0, -2).split('\r\n')) {
    assert.ok(!line.startsWith('.'), `${context}: a line starts with a dot`);
    assert.ok(!/[\r\n]/.test(line), `${context}: a bare CR or LF`);
  }
}

describe('armor', () => {
  it('computes the RFC 9580 CRC-24', () => {
    // The CRC-24 of "123456789" with init 0xB704CE and polynomial 0x1864CFB (the standard check value).
    assert.equal(crc24(Buffer.from('123456789')), 0x21cf02);
  });

  for (const length of [0, 1, 2, 3, 47, 48, 49, 95, 96, 1000, 65537]) {
    it(`${length} bytes: streamed in odd chunks equals in memory, and openpgp.js unarmors it`, async () => {
      const data = randomBytes(length);
      for (const eol of ['\r\n', '\n'] as const) {
        const whole = armorBuffer(data, eol);
        assert.deepEqual(await armorStreamed(data, 7, eol), whole);
        assert.deepEqual(await armorStreamed(data, 4096, eol), whole);
        const text = whole.toString('latin1');
        const body = text.split(eol).slice(2, -3).join('');
        assert.equal(body, data.toString('base64'), "the lines are Node's own base64 of the data");
        for (const line of text.split(eol).slice(2, -3)) assert.ok(line.length <= 64, 'lines of at most 64 characters');
        const { data: unarmored } = await openpgp.unarmor(text.replaceAll('\r\n', '\n'));
        assert.deepEqual(Buffer.from(unarmored as Uint8Array), data);
      }
    });
  }

  it('marks every piece safe for SMTP DATA when lines end in CRLF, and keeps that promise; never with LF', async () => {
    for (const length of [0, 1, 47, 48, 1000, 65537]) {
      for (const chunkSize of [1, 7, 48, 4096]) {
        const data = randomBytes(length);
        const crlf = await armorPieces(data, chunkSize, '\r\n');
        for (const piece of crlf) {
          assert.ok(isDataSafe(piece), `${length}/${chunkSize}: every CRLF piece is marked`);
          assertDataSafe(piece, `${length}/${chunkSize}`);
        }
        for (const piece of await armorPieces(data, chunkSize, '\n')) assert.ok(!isDataSafe(piece), 'LF pieces need mending on the way into DATA');
      }
    }
  });

  it('GnuPG dearmors it (no padding at the end: the case GnuPG 2.2 needs the checksum for)', async () => {
    const home = await createGpgHome();
    try {
      const data = randomBytes(48 * 100);
      const armored = armorBuffer(data, '\r\n');
      assert.deepEqual(await gpgOk(home, ['--dearmor'], armored), data);
      // and GnuPG checks our checksum: a wrong one is refused
      const text = armored.toString('latin1');
      const crcAt = text.lastIndexOf('\r\n=') + 3;
      const wrong = text.slice(0, crcAt) + (text[crcAt] === 'A' ? 'B' : 'A') + text.slice(crcAt + 1);
      await assert.rejects(gpgOk(home, ['--dearmor'], wrong), /CRC/i);
    } finally {
      await home.remove();
    }
  });
});
