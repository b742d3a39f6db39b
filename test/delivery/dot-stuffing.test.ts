import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';
import { armorBuffer } from '../../src/crypto/armor.js';
import { isDataSafe, isWholeCrlfLines, joinedWhenSafe, markDataSafe } from '../../src/mime/data-safe.js';
import { fastTransform, installFastDotStuffing, originalTransform, transformIsKnown } from '../../src/delivery/dot-stuffing.js';
import { escape } from '../helpers/data-stream.js';

type Body = typeof originalTransform;

/** Random bytes dense in what the escaping looks at: CR, LF, dots, and bytes just above and below '.'. */
function trickyBytes(length: number): Buffer {
  const alphabet = Buffer.from('\r\n.\r\n..-/A\x00\xff');
  const picks = randomBytes(length);
  return Buffer.from(picks.map((pick) => (pick < 200 ? alphabet[pick % alphabet.length]! : pick)));
}

function cutAtRandom(data: Buffer): Buffer[] {
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; ) {
    const length = 1 + (randomBytes(1)[0]! % 9) * (randomBytes(1)[0]! % 3 === 0 ? 40 : 1);
    chunks.push(data.subarray(at, at + length));
    at += length;
  }
  return chunks;
}

describe("nodemailer's DATA escaping, the fast body", () => {
  it('is installed: the nodemailer in package-lock.json is the one it was checked against', () => {
    assert.equal(transformIsKnown(), true, 'nodemailer changed data-stream.js: re-check fastTransform against it and update the hash');
    assert.equal(installFastDotStuffing(), true);
    assert.equal(DataStream.prototype._transform, fastTransform);
  });

  it('refuses to replace an escaping it does not know', () => {
    assert.equal(transformIsKnown(function changed() {} as unknown as Body), false);
    const installed = DataStream.prototype._transform;
    const changed: Body = function (chunk, _encoding, done) {
      this.push(chunk);
      done();
    };
    DataStream.prototype._transform = changed;
    try {
      assert.equal(installFastDotStuffing(), false);
      assert.equal(DataStream.prototype._transform, changed, "another nodemailer's escaping stays in place");
    } finally {
      DataStream.prototype._transform = installed;
    }
  });

  it('gives the same bytes and counters as the original on edge cases', async () => {
    const cases: Array<Array<Buffer | string>> = [
      ['.starts with a dot\r\n.\r\n'],
      ['bare\nLF\n.dot after bare LF\n'],
      ['bare\rCR\r.dot after bare CR\r'],
      ['split CR', '\r', '\n', '.', 'dot after a split CRLF'],
      ['ends in CR\r'],
      ['ends in LF\n'],
      ['no line end at all'],
      ['', 'empty chunks', Buffer.alloc(0)],
      ['a string chunk with ümlauts\n.'],
      [Buffer.from('\r\r\n\n\r.\n.\r\n..')],
    ];
    for (const chunks of cases) assert.deepEqual(await escape(fastTransform, chunks), await escape(originalTransform, chunks), JSON.stringify(chunks));
  });

  it('gives the same bytes and counters as the original on random input cut at random places', async () => {
    for (let round = 0; round < 300; round++) {
      const data = round % 10 === 0 ? randomBytes(5000) : trickyBytes(1 + (round % 50) * 7);
      const chunks = cutAtRandom(data);
      assert.deepEqual(await escape(fastTransform, chunks), await escape(originalTransform, chunks), `round ${round}: ${data.toString('hex')}`);
    }
  });

  it('passes armor marked safe for DATA as it is, and still escapes it where what came before needs it', async () => {
    const armor = () => markDataSafe(armorBuffer(randomBytes(3000), '\r\n'));
    const cases: Array<Array<Buffer | string>> = [
      [armor()],
      ['Subject: x\r\n\r\n', armor(), armor()],
      ['after a line end\n', armor()],
      ['after a bare CR\r', armor()],
      ['no line end before the armor', armor()],
    ];
    for (const chunks of cases) assert.deepEqual(await escape(fastTransform, chunks), await escape(originalTransform, chunks), JSON.stringify(chunks).slice(0, 80));
  });

  it('does not examine a marked buffer after a line end (shown with one that breaks the promise)', async () => {
    const lying = () => markDataSafe(Buffer.from('a\r\n.b\r\n'));
    assert.equal((await escape(fastTransform, ['x\r\n', lying()])).out.toString(), 'x\r\na\r\n.b\r\n.\r\n');
    assert.equal((await escape(fastTransform, ['x\r', lying()])).out.toString(), 'x\r\na\r\n..b\r\n.\r\n', 'after a bare CR it is examined');
  });

  it('finds a buffer safe exactly when it is whole lines the original escaping leaves as they are', async () => {
    const lines = ['abc', '', '.x', '..', 'a\rb', 'a\nb', 'x.y', '\r'];
    for (let round = 0; round < 400; round++) {
      const picks = randomBytes(1 + (round % 6));
      const eol = round % 5 === 0 ? '\n' : '\r\n';
      const text = [...picks].map((pick) => lines[pick % lines.length]!).join(eol) + (round % 3 === 0 ? '' : eol);
      const data = Buffer.from(text, 'latin1');
      const { out } = await escape(originalTransform, [data]);
      const leftAsItIs = out.subarray(0, data.length).equals(data) && ['.\r\n', '\n.\r\n', '\r\n.\r\n'].includes(out.subarray(data.length).toString('latin1'));
      const wholeLines = data.length === 0 || text.endsWith('\n');
      assert.equal(isWholeCrlfLines(data), leftAsItIs && wholeLines, JSON.stringify(text));
    }
  });

  it('joins the pieces of a copy into one marked buffer only when every piece is safe', async () => {
    const armor = markDataSafe(armorBuffer(randomBytes(300), '\r\n'));
    const prefix = Buffer.from('Subject: x\r\n\r\n');
    const joined = joinedWhenSafe([prefix, armor, Buffer.from('\r\n--b--\r\n')]);
    assert.equal(joined.length, 1);
    assert.ok(isDataSafe(joined[0]!));
    assert.deepEqual((await escape(originalTransform, joined)).out, Buffer.concat([prefix, armor, Buffer.from('\r\n--b--\r\n.\r\n')]));
    for (const unsafe of ['.dot\r\n', 'bare\nLF\r\n', 'no line end']) {
      const pieces = [Buffer.from(unsafe), armor, Buffer.alloc(0)];
      const kept = joinedWhenSafe(pieces);
      assert.equal(kept, pieces, `${JSON.stringify(unsafe)}: the pieces stay apart`);
      assert.ok(isDataSafe(kept[1]!), 'and the armor keeps its mark');
    }
  });
});
