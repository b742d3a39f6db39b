import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { armorBuffer } from '../../src/crypto/armor.js';
import { dearmor } from '../../src/crypto/dearmor.js';

const BEGIN = '-----BEGIN PGP MESSAGE-----';
const END = '-----END PGP MESSAGE-----';
const base64Lines = (data: Buffer) => data.toString('base64').match(/.{1,64}/g) ?? [];

describe('dearmor', () => {
  const data = randomBytes(1000);

  it("reads Lacre's own armor, CRLF and LF, back to the bytes", () => {
    for (const eol of ['\r\n', '\n'] as const) {
      const armored = armorBuffer(data, eol).toString('latin1');
      assert.deepEqual(dearmor(armored, true), { bytes: data, complete: true, after: '' });
    }
  });

  it('reads armor header lines, a CRC line or none, trailing white space, and keeps what follows the END line', () => {
    const lines = [BEGIN, 'Version: GnuPG v2', 'Comment: https://gnupg.org', '', ...base64Lines(data).map((line) => `${line} `), '=abcd', `${END}  `, 'after'];
    assert.deepEqual(dearmor(lines.join('\r\n'), true), { bytes: data, complete: true, after: 'after' });
    const noCrc = [BEGIN, '', ...base64Lines(data), END, ''].join('\n');
    assert.deepEqual(dearmor(noCrc, true), { bytes: data, complete: true, after: '' });
  });

  it('reads base64 without padding, as GnuPG does', () => {
    const unpadded = randomBytes(20);
    const text = [BEGIN, '', unpadded.toString('base64').replace(/=+$/, ''), END].join('\n');
    assert.deepEqual(dearmor(text, true)?.bytes, unpadded);
  });

  it('through a window: the whole lines read so far, decoded in whole base64 groups', () => {
    const text = [BEGIN, '', ...base64Lines(data), END, ''].join('\r\n');
    let previous = 0;
    for (let cut = 0; cut < text.length; cut += 7) {
      const read = dearmor(text.slice(0, cut), false);
      if (cut < BEGIN.length + 2) {
        assert.equal(read, undefined, `window of ${cut}`);
        continue;
      }
      assert.ok(read, `window of ${cut}`);
      assert.equal(read.complete, false);
      assert.deepEqual(read.bytes, data.subarray(0, read.bytes.length), 'a prefix of the data');
      assert.ok(read.bytes.length >= previous, 'more of the window, more of the data');
      assert.ok(read.bytes.length > (cut - BEGIN.length - 4) * 0.72 - 200, `window of ${cut}: only ${read.bytes.length} bytes`);
      previous = read.bytes.length;
    }
    assert.deepEqual(dearmor(text, false)?.complete, true, 'the END line in the window');
  });

  const refused: Array<[string, string]> = [
    ['another armor type', ['-----BEGIN PGP PUBLIC KEY BLOCK-----', '', 'mQINBF...', '-----END PGP PUBLIC KEY BLOCK-----'].join('\n')],
    ['a signed message', ['-----BEGIN PGP SIGNED MESSAGE-----', 'Hash: SHA256', '', 'hello'].join('\n')],
    ['text before the BEGIN line', ['hello', BEGIN, '', 'AAAA', END].join('\n')],
    ['no blank line after the armor headers', [BEGIN, 'Version: 1', 'AAAA', END].join('\n')],
    ['a line that is not base64', [BEGIN, '', 'AAAA', 'Secret meeting at noon.', END].join('\n')],
    ['base64 after the padding', [BEGIN, '', 'AA==', 'AAAA', END].join('\n')],
    ['a damaged END line', [BEGIN, '', 'AAAA', '-----END PGP MESSAGE----- x'].join('\n')],
    ['something else after the CRC line', [BEGIN, '', 'AAAA', '=abcd', 'AAAA', END].join('\n')],
    ['a lone sixth base64 bit-group', [BEGIN, '', 'AAAAA', END].join('\n')],
  ];
  for (const [name, text] of refused) {
    it(`refuses ${name}`, () => assert.equal(dearmor(text, true), undefined));
  }

  it('says "not complete" when the text ends before the END line', () => {
    assert.deepEqual(dearmor([BEGIN, '', 'AAAA'].join('\n'), true), { bytes: Buffer.alloc(3), complete: false, after: '' });
    assert.deepEqual(dearmor([BEGIN, 'Version: x'].join('\n'), true), { bytes: Buffer.alloc(0), complete: false, after: '' });
  });

  it('never throws on random or damaged text', () => {
    const armored = armorBuffer(randomBytes(300), '\r\n');
    for (let round = 0; round < 2000; round++) {
      const damaged = Buffer.from(armored);
      for (let i = 0; i < 1 + (round % 5); i++) damaged[Math.floor(Math.random() * damaged.length)] = Math.floor(Math.random() * 256);
      const result = dearmor(damaged.toString('latin1').slice(0, round % 500), round % 2 === 0);
      assert.ok(result === undefined || Buffer.isBuffer(result.bytes));
      assert.doesNotThrow(() => dearmor(randomBytes(round % 100).toString('latin1'), true));
    }
  });
});
