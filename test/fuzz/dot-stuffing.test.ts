/**
 * The DATA escaping as a property: for any bytes cut anywhere (some chunks marked safe, as armor is), Lacre's fast
 * body writes what nodemailer's own writes for the whole input, and what goes on the wire is SMTP DATA that
 * reads back as the input (line ends made CRLF): no bare CR or LF, no line of a lone dot before the end, so no
 * end-of-data can be smuggled in.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fastTransform, originalTransform } from '../../src/delivery/dot-stuffing.js';
import { markDataSafe } from '../../src/mime/data-safe.js';
import { escape } from '../helpers/data-stream.js';
import { checkProperty, corpusCases, cutInto, cuts } from './settings.js';

/** What an SMTP server reads from DATA: the message, or a failure naming what is not valid DATA. */
function readData(wire: Buffer): Buffer {
  const text = wire.toString('latin1');
  assert.ok(text.endsWith('\r\n.\r\n') || text === '.\r\n', 'ends with the end-of-data line');
  const data = text.slice(0, -3);
  assert.doesNotMatch(data, /\r(?!\n)|(?<!\r)\n/, 'no bare CR or LF');
  const lines = data.split('\r\n').slice(0, -1);
  assert.ok(!lines.includes('.'), 'no end-of-data before the end');
  return Buffer.from(lines.map((line) => (line.startsWith('.') ? line.slice(1) : line)).join('\r\n') + '\r\n', 'latin1');
}

/** The input as it must arrive: every line end CRLF, a last line ended. */
function expectedMessage(input: Buffer): Buffer {
  const text = input.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  return Buffer.from(text.endsWith('\r\n') ? text : `${text}\r\n`, 'latin1');
}

const tricky = fc
  .array(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x2d, 0x2f, 0x41, 0x00, 0xff, 0x20), { maxLength: 200 })
  .map((bytes) => Buffer.from(bytes));

/** Whole CRLF lines with no leading dot: what the armorer marks safe. */
const safeLines = fc
  .array(fc.stringMatching(/^[^.\r\n][^\r\n]{0,20}$/), { minLength: 1, maxLength: 4 })
  .map((lines) => ({ safe: true as const, bytes: Buffer.from(lines.map((line) => `${line}\r\n`).join(''), 'latin1') }));

const pieces = fc.array(fc.oneof({ weight: 3, arbitrary: tricky.map((bytes) => ({ safe: false as const, bytes })) }, { weight: 1, arbitrary: safeLines }), { maxLength: 6 });

async function property(parts: Array<{ safe: boolean; bytes: Buffer }>, cutsAt: number[]): Promise<void> {
  const input = Buffer.concat(parts.map((part) => part.bytes));
  // Unmarked pieces are cut anywhere; a marked piece travels whole, as the armorer's chunks do.
  const chunks = parts.flatMap((part) => (part.safe ? [markDataSafe(Buffer.from(part.bytes))] : cutInto(part.bytes, cutsAt)));
  const { out: fast } = await escape(fastTransform, chunks);
  const { out: original } = await escape(originalTransform, input.length === 0 ? [] : [input]);
  assert.ok(fast.equals(original), 'the fast body writes what the original writes');
  assert.ok(readData(fast).equals(expectedMessage(input)), 'DATA reads back as the input');
}

describe('fuzz: the DATA escaping', () => {
  it('any bytes, any cut, marked chunks too: the original output, valid DATA, the input back', () =>
    checkProperty('DATA escaping', fc.asyncProperty(pieces, cuts, property), 300));

  it('replays the kept counterexamples (test/fuzz/corpus/dot-stuffing-*.json)', { skip: corpusCases('dot-stuffing').length === 0 && 'no DATA escaping case kept yet' }, async () => {
    for (const entry of corpusCases('dot-stuffing')) {
      const input = entry.input as { parts: Array<{ safe: boolean; bytes: string }>; cuts: number[] };
      await property(input.parts.map((part) => ({ safe: part.safe, bytes: Buffer.from(part.bytes, 'base64') })), input.cuts);
    }
  });
});
