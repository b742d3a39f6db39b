/**
 * Undoing the wrapping of src/mime/assemble.ts: messages are wrapped the way the filter wraps them (its splitter,
 * envelopes and armorer), then unwrapped; the armored block's plaintext is read back with the strict dearmorer
 * (no encryption here: src/mime never sees any, and test/box-client decrypts real copies end to end).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import libqp from 'libqp';
import { armorBuffer } from '../../src/crypto/armor.js';
import { dearmor } from '../../src/crypto/dearmor.js';
import { contentEntityHead, inlineEnvelope, pgpMimeEnvelope } from '../../src/mime/assemble.js';
import { transferEncodingOf } from '../../src/mime/inspect.js';
import { splitMessage } from '../../src/mime/split.js';
import { MalformedWrappingError, restoreOriginal, unwrap, type WrappingStyle } from '../../src/mime/unwrap.js';

const MAX_HEADER = 1024 * 1024;

const MULTIPART = Buffer.from(
  'Received: from mx.example.net by gw.example.org; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
    'From: Bob <bob@example.net>\r\n' +
    'To: alice@example.org\r\n' +
    'Subject: =?UTF-8?Q?caf=C3=A9?=\r\n' +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: multipart/mixed;\r\n boundary="b1"\r\n' +
    '\r\n' +
    '--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 \x00 trailing  \r\n' +
    '--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--b1--\r\n',
  'latin1',
);
const NO_MIME_HEADERS = Buffer.from('From: bob@example.net\nTo: alice@example.org\nSubject: plain\n\nbare LF lines\nno final newline', 'latin1');
const PLAIN_7BIT = Buffer.from('From: bob@example.net\r\nTo: alice@example.org\r\nSubject: inline\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello inline\r\n', 'latin1');

function chunked(bytes: Buffer, size: number): AsyncIterator<Buffer> {
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) pieces.push(bytes.subarray(at, at + size));
  return (async function* () {
    yield* pieces;
  })();
}

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of source) items.push(item);
  return items;
}

/** The copy the filter makes of `message` (pipeline.ts: plaintextOf, wrapArmored), with the plaintext armored as it is. */
async function wrapLikeTheFilter(message: Buffer, kind: 'mime' | 'inline'): Promise<{ wrapped: Buffer; payload: Buffer }> {
  const split = await splitMessage(chunked(message, 64 * 1024), MAX_HEADER);
  const body = split.bodyStart;
  const payload = kind === 'mime' ? Buffer.concat([contentEntityHead(split), body]) : decoded(transferEncodingOf(split.fields), body);
  const envelope = kind === 'mime' ? pgpMimeEnvelope(split) : inlineEnvelope(split);
  return { wrapped: Buffer.concat([envelope.prefix, armorBuffer(payload, split.eol), envelope.suffix]), payload };
}

function decoded(encoding: string, body: Buffer): Buffer {
  return encoding === 'quoted-printable' ? libqp.decode(body.toString('latin1')) : body;
}

/** Unwraps `wrapped` read in `chunkSize` pieces, reads the armored block's plaintext, and restores the message. */
async function unwrapAndRestore(wrapped: Buffer, chunkSize: number, style?: WrappingStyle) {
  const found = await unwrap(chunked(wrapped, chunkSize));
  const armor = (await collect(found.armor)).join('');
  const plaintext = dearmor(armor, true);
  assert.ok(plaintext?.complete, 'the armored block is whole');
  const restored = Buffer.concat(await collect(await restoreOriginal(found.outer, style ?? found.style, chunked(plaintext.bytes, 5))));
  return { style: found.style, armor, payload: plaintext.bytes, restored };
}

describe('unwrap and restoreOriginal undo assemble.ts', () => {
  for (const chunkSize of [1, 7, 64 * 1024]) {
    test(`PGP/MIME: the armored block and the exact message come back (read in ${chunkSize}-byte chunks)`, async () => {
      const { wrapped, payload } = await wrapLikeTheFilter(MULTIPART, 'mime');
      const result = await unwrapAndRestore(wrapped, chunkSize);
      assert.equal(result.style, 'pgp-mime');
      assert.equal(result.armor, armorBuffer(payload, '\r\n').toString('latin1'));
      assert.deepEqual(result.payload, payload);
      assert.deepEqual(result.restored, MULTIPART);
    });
  }

  test('PGP/MIME of a message without MIME headers: the MIME-Version line the envelope added is dropped again', async () => {
    const { wrapped } = await wrapLikeTheFilter(NO_MIME_HEADERS, 'mime');
    assert.match(wrapped.toString('latin1'), /^MIME-Version: 1\.0\n/m);
    const result = await unwrapAndRestore(wrapped, 13);
    assert.equal(result.style, 'pgp-mime');
    assert.deepEqual(result.restored, NO_MIME_HEADERS);
  });

  test('PGP/MIME keeps an original MIME-Version when the entity has Content-* fields', async () => {
    const message = Buffer.from('Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody\r\n', 'latin1');
    const { wrapped } = await wrapLikeTheFilter(message, 'mime');
    assert.deepEqual((await unwrapAndRestore(wrapped, 3)).restored, message);
  });

  test('PGP/MIME: Content-* fields that stood among the others come back at the end of the header block', async () => {
    const message = Buffer.from('MIME-Version: 1.0\r\nFrom: a@example.org\r\nContent-Type: text/plain\r\nSubject: x\r\n\r\nbody\r\n', 'latin1');
    const { wrapped } = await wrapLikeTheFilter(message, 'mime');
    const expected = Buffer.from('MIME-Version: 1.0\r\nFrom: a@example.org\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\nbody\r\n', 'latin1');
    assert.deepEqual((await unwrapAndRestore(wrapped, 11)).restored, expected);
  });

  for (const chunkSize of [1, 64 * 1024]) {
    test(`inline: the header block as received and the body come back (read in ${chunkSize}-byte chunks)`, async () => {
      const { wrapped, payload } = await wrapLikeTheFilter(PLAIN_7BIT, 'inline');
      const result = await unwrapAndRestore(wrapped, chunkSize);
      assert.equal(result.style, 'inline');
      assert.deepEqual(result.payload, payload);
      assert.deepEqual(result.restored, PLAIN_7BIT);
    });
  }

  test('inline: a quoted-printable body comes back decoded, without the Content-Transfer-Encoding line', async () => {
    const message = Buffer.from(
      'Subject: qp\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9 and a soft=\n break\n',
      'latin1',
    );
    const { wrapped } = await wrapLikeTheFilter(message, 'inline');
    const expected = Buffer.from('Subject: qp\nContent-Type: text/plain; charset=utf-8\n\ncaf\xc3\xa9 and a soft break\n', 'latin1');
    assert.deepEqual((await unwrapAndRestore(wrapped, 9)).restored, expected);
  });

  test('a PGP/MIME copy read as inline (the caller insists) keeps the outer header block and takes the entity as body', async () => {
    const { wrapped, payload } = await wrapLikeTheFilter(PLAIN_7BIT, 'mime');
    const result = await unwrapAndRestore(wrapped, 64 * 1024, 'inline');
    assert.equal(result.style, 'pgp-mime');
    const outerEnd = wrapped.indexOf('\r\n\r\n') + 4;
    assert.deepEqual(result.restored, Buffer.concat([wrapped.subarray(0, outerEnd), payload]));
  });

  test('text around the armored block in an inline body is read and dropped', async () => {
    const { wrapped, payload } = await wrapLikeTheFilter(PLAIN_7BIT, 'inline');
    const headerEnd = wrapped.indexOf('\r\n\r\n') + 4;
    const padded = Buffer.concat([wrapped.subarray(0, headerEnd), Buffer.from('a note before\r\n'), wrapped.subarray(headerEnd), Buffer.from('and after\r\n')]);
    const result = await unwrapAndRestore(padded, 10);
    assert.deepEqual(result.payload, payload);
    assert.deepEqual(result.restored, PLAIN_7BIT);
  });
});

describe('unwrap refuses what it cannot undo, with MalformedWrappingError', () => {
  const isMalformed = (pattern: RegExp) => (error: unknown) => error instanceof MalformedWrappingError && pattern.test(error.message);

  test('a body without an armored block', async () => {
    const found = await unwrap(chunked(PLAIN_7BIT, 16));
    await assert.rejects(collect(found.armor), isMalformed(/^no armored OpenPGP message in the body$/));
  });

  test('an armored block cut off before its END line', async () => {
    const { wrapped } = await wrapLikeTheFilter(MULTIPART, 'mime');
    const cut = wrapped.subarray(0, wrapped.indexOf('-----END PGP MESSAGE-----'));
    const found = await unwrap(chunked(cut, 100));
    await assert.rejects(collect(found.armor), isMalformed(/^the armored OpenPGP message is cut off$/));
  });

  test('an outer header block over 1 MiB', async () => {
    const huge = Buffer.from(`X-Filler: ${'a'.repeat(70)}\r\n`.repeat(16 * 1024), 'latin1');
    await assert.rejects(unwrap(chunked(huge, 64 * 1024)), isMalformed(/^cannot read the header block: .*exceeds/));
  });

  test('a PGP/MIME plaintext whose entity header block is over 1 MiB', async () => {
    const { wrapped } = await wrapLikeTheFilter(MULTIPART, 'mime');
    const found = await unwrap(chunked(wrapped, 64 * 1024));
    const entity = Buffer.from(`Content-X: ${'b'.repeat(70)}\r\n`.repeat(16 * 1024), 'latin1');
    await assert.rejects(restoreOriginal(found.outer, 'pgp-mime', chunked(entity, 64 * 1024)), isMalformed(/^cannot read the header block: /));
  });
});
