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
import { contentEntity, corpus, nonContentHeaderLines } from '../helpers/corpus.js';

const MAX_HEADER = 1024 * 1024;

/** A corpus message by name. */
function sample(name: string): Buffer {
  const found = corpus.find((message) => message.name === name);
  assert.ok(found, name);
  return found.raw;
}

const MULTIPART = sample('multipart with base64 attachment');
const SIMPLE = sample('simple text');

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

  for (const { name, raw } of corpus) {
    test(`PGP/MIME of "${name}": the header lines but Content-* as received, then the content entity`, async () => {
      const { wrapped } = await wrapLikeTheFilter(raw, 'mime');
      const entity = contentEntity(raw);
      // The MIME-Version line the envelope adds to a message without one stays when the entity has Content-* fields.
      const eol = raw.includes('\r\n') ? '\r\n' : '\n';
      const addedMimeVersion = !/^mime-version:/im.test(raw.toString('latin1')) && /^content-/im.test(entity.toString('latin1'));
      const expected = Buffer.concat([...nonContentHeaderLines(raw), Buffer.from(addedMimeVersion ? `MIME-Version: 1.0${eol}` : ''), entity]);
      assert.deepEqual((await unwrapAndRestore(wrapped, 101)).restored, expected);
    });
  }

  for (const chunkSize of [1, 64 * 1024]) {
    test(`inline: the header block as received and the body come back (read in ${chunkSize}-byte chunks)`, async () => {
      const { wrapped, payload } = await wrapLikeTheFilter(SIMPLE, 'inline');
      const result = await unwrapAndRestore(wrapped, chunkSize);
      assert.equal(result.style, 'inline');
      assert.deepEqual(result.payload, payload);
      assert.deepEqual(result.restored, SIMPLE);
    });
  }

  test('inline: a quoted-printable body comes back decoded, without the Content-Transfer-Encoding line', async () => {
    const { wrapped } = await wrapLikeTheFilter(sample('quoted-printable text'), 'inline');
    const expected = Buffer.from(
      'From: sender@example.net\r\nTo: alice@example.test\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nGr\xfc\xdfe aus K\xf6ln, a long line that is soft broken.\r\n',
      'latin1',
    );
    assert.deepEqual((await unwrapAndRestore(wrapped, 9)).restored, expected);
  });

  test('a PGP/MIME copy read as inline (the caller insists) keeps the outer header block and takes the entity as body', async () => {
    const { wrapped, payload } = await wrapLikeTheFilter(SIMPLE, 'mime');
    const result = await unwrapAndRestore(wrapped, 64 * 1024, 'inline');
    assert.equal(result.style, 'pgp-mime');
    const outerEnd = wrapped.indexOf('\r\n\r\n') + 4;
    assert.deepEqual(result.restored, Buffer.concat([wrapped.subarray(0, outerEnd), payload]));
  });

  test('text around the armored block in an inline body is read and dropped', async () => {
    const { wrapped, payload } = await wrapLikeTheFilter(SIMPLE, 'inline');
    const headerEnd = wrapped.indexOf('\r\n\r\n') + 4;
    const padded = Buffer.concat([wrapped.subarray(0, headerEnd), Buffer.from('a note before\r\n'), wrapped.subarray(headerEnd), Buffer.from('and after\r\n')]);
    const result = await unwrapAndRestore(padded, 10);
    assert.deepEqual(result.payload, payload);
    assert.deepEqual(result.restored, SIMPLE);
  });
});

describe('unwrap refuses what it cannot undo, with MalformedWrappingError', () => {
  const isMalformed = (pattern: RegExp) => (error: unknown) => error instanceof MalformedWrappingError && pattern.test(error.message);

  test('a body without an armored block', async () => {
    const found = await unwrap(chunked(SIMPLE, 16));
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
