/**
 * The splitter, the header reader and the already-encrypted detector as properties, over any bytes cut anywhere:
 * the split is the same whatever the cut (the header size limit included), it loses and adds no byte, it agrees
 * with an independent line reader, and reading the header or detecting encryption never throws.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { splitMessage } from '../../src/mime/split.js';
import { fieldValue, type SplitMessage } from '../../src/mime/header.js';
import { contentTypeOf, messageIdOf, transferEncodingOf } from '../../src/mime/inspect.js';
import { multipartParts, contentTypeOfPart } from '../../src/mime/parts.js';
import { alreadyEncryptedReason, needsLongerLook } from '../../src/filter/already-encrypted.js';
import { MessageRejectedError } from '../../src/errors.js';
import { pgpMimeMessage, smimeMessage, splitRaw } from '../helpers/corpus.js';
import { messageBytes } from './messages.js';
import { checkProperty, corpusCases, corpusFiles, cutInto, cuts } from './settings.js';

/** Encrypted-looking bodies: armor, and a real S/MIME body (base64 of CMS EnvelopedData). */
const ARMORED = [
  '-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA5yX\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n',
  smimeMessage.toString('latin1').split('\r\n\r\n')[1]!,
  pgpMimeMessage.toString('latin1').split('\r\n\r\n').slice(1).join('\r\n\r\n'),
];

interface Outcome {
  readonly split?: SplitMessage;
  /** What followed the split: the body as the caller reads it on. */
  readonly body?: Buffer;
  readonly refused?: string;
}

async function split(chunks: Buffer[], maxHeaderSize: number): Promise<Outcome> {
  const source = (async function* () {
    yield* chunks;
  })();
  try {
    const result = await splitMessage(source, maxHeaderSize);
    const rest: Buffer[] = [result.bodyStart];
    for await (const chunk of source) rest.push(chunk);
    return { split: result, body: Buffer.concat(rest) };
  } catch (error) {
    if (error instanceof MessageRejectedError) return { refused: error.message };
    throw error;
  }
}

/** What must not depend on the cut. */
function comparable(outcome: Outcome): unknown {
  if (outcome.refused !== undefined) return { refused: outcome.refused };
  const { split: s, body } = outcome;
  return {
    headerBlock: s!.headerBlock.toString('latin1'),
    separator: s!.separator.toString('latin1'),
    eol: s!.eol,
    fields: s!.fields.map((field) => [field.name, field.lowerName, field.raw.toString('latin1')]),
    body: body!.toString('latin1'),
  };
}

/** Reading what was split: none of it may throw, whatever the bytes. */
function readEverything(s: SplitMessage, body: Buffer): void {
  for (const field of s.fields) fieldValue(field);
  const type = contentTypeOf(s.fields);
  const encoding = transferEncodingOf(s.fields);
  messageIdOf(s.fields);
  needsLongerLook(type, body);
  for (const complete of [true, false]) alreadyEncryptedReason(type, encoding, { bytes: body, complete });
  for (const part of multipartParts(body.toString('latin1'), type.params.boundary ?? 'b').parts) contentTypeOfPart(part);
}

async function property(raw: Buffer, cutsAt: number[], maxHeaderSize: number): Promise<void> {
  const whole = await split(raw.length === 0 ? [] : [raw], maxHeaderSize);
  const cut = await split(cutInto(raw, cutsAt), maxHeaderSize);
  assert.deepEqual(comparable(cut), comparable(whole), 'the split does not depend on the cut');
  const unlimited = await split([raw], Number.MAX_SAFE_INTEGER);
  const s = unlimited.split!;
  if (whole.refused === undefined) assert.deepEqual(comparable(whole), comparable(unlimited), 'under the limit, the limit changes nothing');
  else assert.ok(s.headerBlock.length > maxHeaderSize, `refused only when the header block (${s.headerBlock.length}) is over the limit (${maxHeaderSize})`);
  assert.ok(Buffer.concat([s.headerBlock, s.separator, unlimited.body!]).equals(raw), 'no byte lost or added');
  assert.ok(Buffer.concat(s.fields.map((field) => field.raw)).equals(s.headerBlock), 'the header block is its fields');
  const independent = splitRaw(raw);
  assert.deepEqual(s.fields.map((field) => field.raw.toString('latin1')), independent.headerLines.map((line) => line.toString('latin1')), 'the fields an independent reader finds');
  assert.equal(s.separator.toString('latin1'), independent.separator.toString('latin1'));
  readEverything(s, unlimited.body!);
}

const headerLimit = fc.oneof(fc.nat({ max: 400 }), fc.constant(64 * 1024));

describe('fuzz: the splitter, the header reader, the detector', () => {
  it('any bytes, any cut, any header limit: one split, every byte kept, reading never throws', () =>
    checkProperty('split and read', fc.asyncProperty(messageBytes(ARMORED), cuts, headerLimit, property), 500));

  it('replays the kept counterexamples (test/fuzz/corpus/split-*.json)', async () => {
    let replayed = 0;
    for (const entry of corpusCases('split')) {
      const input = entry.input as { raw: string; cuts: number[]; maxHeaderSize: number };
      await property(Buffer.from(input.raw, 'base64'), input.cuts, input.maxHeaderSize);
      replayed += 1;
    }
    assert.equal(replayed, corpusFiles('split').length, 'every kept file replayed');
    assert.ok(replayed > 0, 'split cases are kept: none replayed means the corpus was not found');
  });
});
