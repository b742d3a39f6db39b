/**
 * The header reader (src/mime/header.ts): which lines are fields, how names and values are read, and that a
 * field's raw bytes are what was received.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classifyLine, detectEol, fieldName, fieldValue, findField, isContentField, type HeaderField } from '../../src/mime/header.js';
import { fieldsOf, splitWhole } from './read.js';

const bytes = (text: string) => Buffer.from(text, 'latin1');

const field = (raw: string): HeaderField => {
  const name = fieldName(bytes(raw));
  return { name, lowerName: name.toLowerCase(), raw: bytes(raw) };
};

describe('header reader', () => {
  describe('classifyLine', () => {
    const cases: Array<[string, boolean, string]> = [
      ['\r\n', false, 'blank'],
      ['\n', false, 'blank'],
      ['', false, 'blank'],
      ['Subject: hi\r\n', false, 'field'],
      ['Subject:\r\n', false, 'field'],
      ['X-Odd_Name.1!#$%&*+~^`{|}: v\n', false, 'field'],
      ['Subject \t: obsolete white space before the colon\r\n', false, 'field'],
      ['Subject: no line ending yet', false, 'field'],
      [`X-Long: ${'v'.repeat(5000)}\r\n`, false, 'field'],
      [' folded\r\n', true, 'continuation'],
      ['\tfolded\r\n', true, 'continuation'],
      [' folded before any field\r\n', false, 'body'],
      ['no colon here\r\n', false, 'body'],
      [': no name\r\n', false, 'body'],
      ['Two words: a space in the name\r\n', false, 'body'],
      ['S\xfcbject: an 8-bit byte in the name\r\n', false, 'body'],
      ['Sub\x00ject: a NUL in the name\r\n', false, 'body'],
      ['\r\r\n', false, 'body'],
      ['\r', false, 'body'],
      ['--boundary\r\n', false, 'body'],
      [`${'N'.repeat(1200)}: a name past the first 1000 bytes\r\n`, false, 'body'],
    ];
    for (const [line, haveField, kind] of cases) {
      it(`${JSON.stringify(line.slice(0, 40))}${haveField ? ' after a field' : ''} is ${kind}`, () => {
        assert.equal(classifyLine(bytes(line), haveField), kind);
      });
    }
  });

  it('fieldName: the name as written, without white space before the colon', () => {
    assert.equal(fieldName(bytes('Content-Type: text/plain\r\n')), 'Content-Type');
    assert.equal(fieldName(bytes('SUBJECT: x\r\n')), 'SUBJECT');
    assert.equal(fieldName(bytes('Subject \t: x\r\n')), 'Subject');
    assert.equal(fieldName(bytes('X-Time: 12:00:00\r\n')), 'X-Time', 'up to the first colon');
  });

  it('fieldValue: unfolded and trimmed for reading, CRLF or LF, space or tab', () => {
    assert.equal(fieldValue(field('Subject:   hello  \r\n')), 'hello');
    assert.equal(fieldValue(field('Subject: one\r\n two\r\n\tthree\r\n')), 'one two three');
    assert.equal(fieldValue(field('Subject: one\n two\n')), 'one two');
    assert.equal(fieldValue(field('Subject:\r\n')), '');
    assert.equal(fieldValue(field('Subject: no line ending')), 'no line ending');
    assert.equal(fieldValue(field('X-Time: 12:00:00\r\n')), '12:00:00');
    assert.equal(fieldValue(field('Subject: Gr\xfc\xdfe\r\n')), 'Gr\xfc\xdfe', '8-bit bytes read one to one (latin1)');
  });

  it('findField: by lower-case name whatever the spelling, the first of repeated fields', () => {
    const fields = [field('Received: first\r\n'), field('RECEIVED: second\r\n'), field('content-TYPE: text/html\r\n')];
    assert.equal(findField(fields, 'received'), fields[0]);
    assert.equal(findField(fields, 'content-type'), fields[2]);
    assert.equal(findField(fields, 'subject'), undefined);
  });

  it('isContentField: Content-* fields only', () => {
    for (const name of ['Content-Type', 'content-transfer-encoding', 'CONTENT-ID', 'Content-Disposition', 'Content-Description']) {
      assert.equal(isContentField(field(`${name}: x\r\n`)), true, name);
    }
    for (const name of ['MIME-Version', 'X-Content-Type', 'Content', 'Contents-Type', 'Subject']) {
      assert.equal(isContentField(field(`${name}: x\r\n`)), false, name);
    }
  });

  it('detectEol: the line ending of the first line', () => {
    assert.equal(detectEol(bytes('a\r\nb\nc')), '\r\n');
    assert.equal(detectEol(bytes('a\nb\r\nc')), '\n');
    assert.equal(detectEol(bytes('\nb\r\n')), '\n');
    assert.equal(detectEol(bytes('no line ending')), '\r\n', 'CRLF when nothing says otherwise (SMTP)');
    assert.equal(detectEol(bytes('')), '\r\n');
  });

  describe('fields as the splitter reads them', () => {
    it('keeps a folded field as one field, its continuation lines in its raw bytes', async () => {
      const fields = await fieldsOf('Subject: one\r\n two\r\n\tthree\r\nTo: a@example.net\r\n');
      assert.deepEqual(fields.map((f) => f.name), ['Subject', 'To']);
      assert.equal(fields[0]!.raw.toString('latin1'), 'Subject: one\r\n two\r\n\tthree\r\n');
      assert.equal(fieldValue(fields[0]!), 'one two three');
    });

    it('keeps repeated fields apart, in order, each with its own bytes', async () => {
      const fields = await fieldsOf('Received: from a\r\nreceived: from b\r\nRECEIVED: from c\r\n');
      assert.deepEqual(
        fields.map((f) => [f.name, f.lowerName, f.raw.toString('latin1')]),
        [
          ['Received', 'received', 'Received: from a\r\n'],
          ['received', 'received', 'received: from b\r\n'],
          ['RECEIVED', 'received', 'RECEIVED: from c\r\n'],
        ],
      );
      assert.equal(fieldValue(findField(fields, 'received')!), 'from a');
    });

    it('ends the fields at a line without a colon: it and what follows are body', async () => {
      const raw = 'Subject: hi\r\nno colon\r\nTo: a@example.net\r\n\r\n';
      const split = await splitWhole(raw);
      assert.deepEqual(split.fields.map((f) => f.name), ['Subject']);
      assert.equal(split.bodyStart.toString('latin1'), 'no colon\r\nTo: a@example.net\r\n\r\n');
    });

    it('keeps 8-bit bytes of a value byte for byte; an 8-bit name ends the fields', async () => {
      const subject = Buffer.from('Subject: Überraschung ✓\r\n', 'utf8');
      const split = await splitWhole(Buffer.concat([subject, bytes('X-Bin: \xff\x00\xfe\r\nN\xe4me: v\r\n\r\n')]));
      assert.deepEqual(split.fields[0]!.raw, subject);
      assert.deepEqual(split.fields[1]!.raw, bytes('X-Bin: \xff\x00\xfe\r\n'));
      assert.equal(split.fields.length, 2);
      assert.equal(split.bodyStart.toString('latin1'), 'N\xe4me: v\r\n\r\n');
    });

    it('reads the Content-* fields wherever they stand among the others', async () => {
      const fields = await fieldsOf('From: a\r\nContent-Type: text/plain\r\nSubject: s\r\ncontent-transfer-encoding: 8bit\r\nMIME-Version: 1.0\r\n');
      assert.deepEqual(fields.filter(isContentField).map((f) => f.name), ['Content-Type', 'content-transfer-encoding']);
    });
  });
});
