/**
 * The byte-exact splitter (src/mime/split.ts): where the header block ends, what the separator is, and that
 * header block + separator + body are the input's bytes whatever the chunks it arrives in.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MessageRejectedError } from '../../src/errors.js';
import { splitMessage } from '../../src/mime/split.js';
import type { SplitMessage } from '../../src/mime/header.js';

const DEFAULT_MAX = 64 * 1024;

async function* chunksOf(raw: Buffer, sizes: number | number[]): AsyncGenerator<Buffer> {
  const cuts = typeof sizes === 'number' ? [] : sizes;
  let offset = 0;
  for (const size of cuts) {
    yield raw.subarray(offset, offset + size);
    offset += size;
  }
  const step = typeof sizes === 'number' ? sizes : raw.length;
  for (; offset < raw.length; offset += step) yield raw.subarray(offset, offset + step);
}

interface Whole extends SplitMessage {
  /** bodyStart and every chunk left unread by the splitter. */
  readonly body: Buffer;
}

/** Splits `raw` fed in chunks of `sizes` (one size, or the first chunks' sizes), then reads what is left. */
async function split(raw: Buffer | string, sizes: number | number[] = Math.max(1, raw.length), max = DEFAULT_MAX): Promise<Whole> {
  const bytes = Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'latin1');
  const chunks = chunksOf(bytes, sizes);
  const result = await splitMessage(chunks, max);
  const rest: Buffer[] = [];
  for await (const chunk of chunks) rest.push(chunk);
  return { ...result, body: Buffer.concat([result.bodyStart, ...rest]) };
}

const latin1 = (buffer: Buffer) => buffer.toString('latin1');

/** The parts as text, to compare splits of the same input. */
function shape(result: Whole) {
  return {
    headerBlock: latin1(result.headerBlock),
    separator: latin1(result.separator),
    body: latin1(result.body),
    fields: result.fields.map((field) => [field.name, latin1(field.raw)]),
    eol: result.eol,
  };
}

const EXAMPLES: Record<string, string> = {
  crlf: 'From: a@example.net\r\nSubject: hi\r\n\r\nbody line\r\n',
  'bare LF': 'From: a@example.net\nSubject: hi\n\nbody line\n',
  'no body': 'From: a@example.net\r\nSubject: hi\r\n\r\n',
  'header only, no separator': 'From: a@example.net\r\nSubject: hi\r\n',
  'header only, no final line ending': 'From: a@example.net\r\nSubject: hi',
  'header only, ending in a continuation': 'From: a@example.net\r\nSubject: hi\r\n there',
  'empty header block': '\r\nbody only\r\n',
  'no header at all': 'Hello, this is a body\r\nSubject: not a header here\r\n',
  'opening with a folded line': ' folded\r\nSubject: hi\r\n\r\nbody\r\n',
  'header ended by a line that is no field': 'From: a@example.net\r\nthis is the body\r\n\r\nmore\r\n',
  'folded and repeated fields': 'Received: from a\r\n\tby b; date\r\nReceived: from c by d\r\nSubject: one\r\n two\r\n\r\nbody',
  'blank lines opening the body': 'Subject: hi\r\n\r\n\r\n\r\nbody\r\n',
  'a line of a bare CR': 'Subject: hi\r\n\r\r\nbody\r\n',
  'input ending in a CR': 'Subject: hi\r\n\r',
  'CRLF header, LF separator': 'Subject: hi\r\n\nbody',
  '8-bit and NUL bytes': 'Subject: Gr\xfc\xdfe \xe2\x9c\x93\r\nX-Nul: a\x00b\r\n\r\n\xff\xfe\x00\r\n',
  empty: '',
};

describe('splitMessage', () => {
  it('splits a CRLF message into its exact header block, separator and body', async () => {
    const result = await split(EXAMPLES.crlf!);
    assert.equal(latin1(result.headerBlock), 'From: a@example.net\r\nSubject: hi\r\n');
    assert.equal(latin1(result.separator), '\r\n');
    assert.equal(latin1(result.body), 'body line\r\n');
    assert.equal(result.eol, '\r\n');
    assert.deepEqual(
      result.fields.map((field) => [field.name, field.lowerName, latin1(field.raw)]),
      [
        ['From', 'from', 'From: a@example.net\r\n'],
        ['Subject', 'subject', 'Subject: hi\r\n'],
      ],
    );
  });

  it('splits a bare-LF message at its LF blank line and says so in eol', async () => {
    const result = await split(EXAMPLES['bare LF']!);
    assert.equal(latin1(result.headerBlock), 'From: a@example.net\nSubject: hi\n');
    assert.equal(latin1(result.separator), '\n');
    assert.equal(latin1(result.body), 'body line\n');
    assert.equal(result.eol, '\n');
  });

  it('takes the separator as written: CRLF header lines with an LF blank line', async () => {
    const result = await split(EXAMPLES['CRLF header, LF separator']!);
    assert.equal(latin1(result.separator), '\n');
    assert.equal(latin1(result.body), 'body');
    assert.equal(result.eol, '\r\n');
  });

  it('gives a message with a blank line and nothing after it an empty body', async () => {
    const result = await split(EXAMPLES['no body']!);
    assert.equal(latin1(result.separator), '\r\n');
    assert.equal(result.body.length, 0);
    assert.equal(result.fields.length, 2);
  });

  it('takes a header-only message whole as its header block, with no separator', async () => {
    for (const name of ['header only, no separator', 'header only, no final line ending', 'header only, ending in a continuation']) {
      const raw = EXAMPLES[name]!;
      const result = await split(raw);
      assert.equal(latin1(result.headerBlock), raw, name);
      assert.equal(result.separator.length, 0, name);
      assert.equal(result.body.length, 0, name);
      assert.deepEqual(result.fields.map((field) => field.name), ['From', 'Subject'], name);
    }
    const continued = await split(EXAMPLES['header only, ending in a continuation']!);
    assert.equal(latin1(continued.fields[1]!.raw), 'Subject: hi\r\n there', 'the last field keeps its continuation');
  });

  it('reads an empty header block when the message opens with a blank line', async () => {
    const result = await split(EXAMPLES['empty header block']!);
    assert.equal(result.headerBlock.length, 0);
    assert.equal(latin1(result.separator), '\r\n');
    assert.equal(latin1(result.body), 'body only\r\n');
    assert.deepEqual(result.fields, []);
  });

  it('ends the header block, with no separator, at the first line that cannot be a field', async () => {
    const none = await split(EXAMPLES['no header at all']!);
    assert.equal(none.headerBlock.length, 0);
    assert.equal(none.separator.length, 0);
    assert.equal(latin1(none.body), EXAMPLES['no header at all']);
    assert.deepEqual(none.fields, [], 'a field-like line in the body is body');

    const folded = await split(EXAMPLES['opening with a folded line']!);
    assert.equal(folded.headerBlock.length, 0, 'a continuation line with no field before it is body');
    assert.equal(latin1(folded.body), EXAMPLES['opening with a folded line']);

    const ended = await split(EXAMPLES['header ended by a line that is no field']!);
    assert.equal(latin1(ended.headerBlock), 'From: a@example.net\r\n');
    assert.equal(ended.separator.length, 0);
    assert.equal(latin1(ended.body), 'this is the body\r\n\r\nmore\r\n');
  });

  it('keeps blank lines that open the body in the body, and a bare-CR line out of the separator', async () => {
    const blank = await split(EXAMPLES['blank lines opening the body']!);
    assert.equal(latin1(blank.separator), '\r\n');
    assert.equal(latin1(blank.body), '\r\n\r\nbody\r\n');
    const bareCr = await split(EXAMPLES['a line of a bare CR']!);
    assert.equal(latin1(bareCr.headerBlock), 'Subject: hi\r\n');
    assert.equal(bareCr.separator.length, 0, '"\\r\\r\\n" is not a blank line');
    assert.equal(latin1(bareCr.body), '\r\r\nbody\r\n');
  });

  it('splits empty input into empty parts', async () => {
    const result = await split('');
    assert.deepEqual(shape(result), { headerBlock: '', separator: '', body: '', fields: [], eol: '\r\n' });
  });

  it('gives back every byte: header block + separator + body is the input, 8-bit and NUL bytes included', async () => {
    for (const [name, raw] of Object.entries(EXAMPLES)) {
      const result = await split(raw);
      assert.equal(latin1(Buffer.concat([result.headerBlock, result.separator, result.body])), raw, name);
    }
    const eightBit = await split(EXAMPLES['8-bit and NUL bytes']!);
    assert.deepEqual(eightBit.fields[0]!.raw, Buffer.from('Subject: Gr\xfc\xdfe \xe2\x9c\x93\r\n', 'latin1'));
    assert.deepEqual(eightBit.body, Buffer.from('\xff\xfe\x00\r\n', 'latin1'));
  });

  it('splits the same way whatever the chunks: every chunk size, and every single cut', async () => {
    for (const [name, raw] of Object.entries(EXAMPLES)) {
      const whole = shape(await split(raw));
      for (let size = 1; size < raw.length; size++) assert.deepEqual(shape(await split(raw, size)), whole, `${name}, chunks of ${size}`);
      for (let cut = 0; cut <= raw.length; cut++) assert.deepEqual(shape(await split(raw, [cut])), whole, `${name}, cut at ${cut}`);
    }
  });

  it('reads no further than the chunk that ends the header block', async () => {
    let pulled = 0;
    async function* counted(): AsyncGenerator<Buffer> {
      for (const chunk of ['Subject: hi\r', '\n\r', '\nfirst', ' body chunk', ' never read']) {
        pulled++;
        yield Buffer.from(chunk);
      }
    }
    const result = await splitMessage(counted(), DEFAULT_MAX);
    assert.equal(pulled, 3);
    assert.equal(latin1(result.bodyStart), 'first');
  });

  describe('the header size limit', () => {
    const headerOf = (bytes: number) => {
      const field = 'X-Filler: ';
      return `${field}${'x'.repeat(bytes - field.length - 2)}\r\n`;
    };

    it('refuses a header block over the limit with 5.3.4, however it arrives', async () => {
      const raw = `${headerOf(1001)}\r\nbody\r\n`;
      for (const sizes of [raw.length, 1, 7, 1000]) {
        await assert.rejects(split(raw, sizes, 1000), (error: unknown) => {
          assert.ok(error instanceof MessageRejectedError, `chunks of ${sizes}`);
          assert.equal(error.enhancedCode, '5.3.4');
          assert.match(error.message, /header block exceeds 1000 bytes/);
          return true;
        });
      }
    });

    it('accepts a header block of exactly the limit, however it arrives', async () => {
      for (const separator of ['\r\n', '\n']) {
        const raw = `${headerOf(1000)}${separator}body\r\n`;
        for (const sizes of [raw.length, 1, 7, [1000], [1001], [1002]]) {
          const result = await split(raw, sizes, 1000);
          assert.equal(result.headerBlock.length, 1000, `separator ${JSON.stringify(separator)}, chunks ${JSON.stringify(sizes)}`);
          assert.equal(latin1(result.body), 'body\r\n');
        }
      }
      assert.equal((await split(headerOf(1000), 1, 1000)).headerBlock.length, 1000, 'a header-only message');
    });

    it('stops reading a header block that never ends once it passes the limit', async () => {
      let pulled = 0;
      async function* endless(): AsyncGenerator<Buffer> {
        for (;;) {
          pulled += 100;
          yield Buffer.from(`X-Loop: ${'y'.repeat(90)}\r\n`);
        }
      }
      await assert.rejects(splitMessage(endless(), 10_000), MessageRejectedError);
      assert.ok(pulled <= 10_100, `read ${pulled} bytes`);
    });

    // Found by test/fuzz (corpus/split-body-line-over-limit.json): a body line that opens the body without a blank
    // line was counted against the limit while it arrived, so the outcome depended on where the chunks were cut.
    it('does not count a body line that ends the header block without a blank line, however it arrives', async () => {
      for (const opening of ['Subject: small\r\n', '', '\t']) {
        const raw = `${opening}not a field, a body line ${'b'.repeat(5000)}\r\nmore\r\n`;
        for (const sizes of [raw.length, 1, 7, 4096]) {
          const result = await split(raw, sizes, 100);
          assert.equal(latin1(result.headerBlock), opening === '\t' ? '' : opening, `chunks of ${sizes}`);
          assert.equal(result.body.length, raw.length - result.headerBlock.length);
        }
      }
    });

    it('waits for the end of a line that may still become a field before counting it', async () => {
      const raw = `X-${'a'.repeat(500)}\r\nbody\r\n`;
      for (const sizes of [raw.length, 1, 7, 300]) assert.equal((await split(raw, sizes, 100)).headerBlock.length, 0, `chunks of ${sizes}`);
    });

    it('takes the line ending from the header block, not from a body read in part', async () => {
      for (const sizes of [1, 7, 100]) assert.equal((await split('no header here\nbody\n', sizes)).eol, '\r\n', `chunks of ${sizes}`);
      assert.equal((await split('Subject: x\n\nbody\r\n', 3)).eol, '\n');
    });

    it('does not count the body against the limit', async () => {
      const raw = `Subject: small\r\n\r\n${'b'.repeat(5000)}`;
      const result = await split(raw, 4096, 100);
      assert.equal(result.body.length, 5000);
    });
  });
});
