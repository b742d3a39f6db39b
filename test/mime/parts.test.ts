/**
 * Multipart body parts as far as a window reaches (src/mime/parts.ts), as the already-encrypted check reads them.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { contentTypeOfPart, multipartParts, type BodyPart } from '../../src/mime/parts.js';

const plain = (parts: readonly BodyPart[]) => parts.map((part) => ({ ...part }));

describe('multipartParts', () => {
  const body = [
    'preamble, to be ignored',
    '--b',
    'Content-Type: text/plain',
    '',
    'first',
    '--b',
    'Content-Type: application/octet-stream',
    'Content-Disposition: inline',
    '',
    'second line 1',
    'second line 2',
    '',
    '--b--',
    'epilogue, to be ignored',
    '',
  ];

  for (const eol of ['\r\n', '\n']) {
    it(`splits at the delimiter lines, leaving out preamble and epilogue; the ${JSON.stringify(eol)} before a delimiter is the delimiter’s`, () => {
      const { parts, closed } = multipartParts(body.join(eol), 'b');
      assert.equal(closed, true);
      assert.deepEqual(plain(parts), [
        { header: 'Content-Type: text/plain', body: 'first', ended: true },
        { header: `Content-Type: application/octet-stream${eol}Content-Disposition: inline`, body: `second line 1${eol}second line 2${eol}`, ended: true },
      ]);
    });
  }

  it('takes a delimiter line with transport padding (white space after it), and no other line', () => {
    const text = '--b \t\r\n\r\none\r\n--bx\r\n-- b\r\n --b\r\n--b--extra\r\n--b-- \r\n';
    const { parts, closed } = multipartParts(text, 'b');
    assert.equal(closed, true);
    assert.deepEqual(plain(parts), [{ header: '', body: 'one\r\n--bx\r\n-- b\r\n --b\r\n--b--extra', ended: true }]);
  });

  it('matches the boundary as written: case matters, special characters are not patterns', () => {
    assert.equal(multipartParts('--B\r\n\r\nx\r\n--B--\r\n', 'b').parts.length, 0);
    const special = multipartParts('--=_a.b+c(d)?\r\n\r\nx\r\n--=_a.b+c(d)?--\r\n', '=_a.b+c(d)?');
    assert.deepEqual(plain(special.parts), [{ header: '', body: 'x', ended: true }]);
  });

  it('gives a part with no header lines an empty header, and a part with no blank line an empty body', () => {
    const { parts } = multipartParts('--b\r\n\r\nno header\r\n--b\r\nContent-Type: text/plain\r\n--b--\r\n', 'b');
    assert.deepEqual(plain(parts), [
      { header: '', body: 'no header', ended: true },
      { header: 'Content-Type: text/plain', body: '', ended: true },
    ]);
  });

  it('reports a window that ends inside a part: that part is not ended, the whole is not closed', () => {
    const { parts, closed } = multipartParts('--b\r\nContent-Type: a/b\r\n\r\nwhole\r\n--b\r\nContent-Type: c/d\r\n\r\ncut sh', 'b');
    assert.equal(closed, false);
    assert.deepEqual(plain(parts), [
      { header: 'Content-Type: a/b', body: 'whole', ended: true },
      { header: 'Content-Type: c/d', body: 'cut sh', ended: false },
    ]);
  });

  it('finds no parts before the first delimiter, and stops at the close delimiter', () => {
    assert.deepEqual(multipartParts('just text\r\nno delimiter\r\n', 'b'), { parts: [], closed: false });
    const { parts, closed } = multipartParts('--b\r\n\r\none\r\n--b--\r\n--b\r\n\r\nafter the close\r\n--b--\r\n', 'b');
    assert.equal(closed, true);
    assert.deepEqual(plain(parts), [{ header: '', body: 'one', ended: true }]);
  });

  it('gives an open delimiter at the very end an empty, unended part', () => {
    const { parts, closed } = multipartParts('--b\r\n\r\none\r\n--b', 'b');
    assert.equal(closed, false);
    assert.deepEqual(plain(parts), [
      { header: '', body: 'one', ended: true },
      { header: '', body: '', ended: false },
    ]);
  });
});

describe('contentTypeOfPart', () => {
  const part = (header: string): BodyPart => ({ header, body: '', ended: true });

  it('reads the media type, lower-cased, from a field spelled any way, folded or not', () => {
    assert.equal(contentTypeOfPart(part('Content-Type: Application/PGP-Encrypted')).mediaType, 'application/pgp-encrypted');
    assert.equal(contentTypeOfPart(part('Content-Description: x\r\ncontent-type :\r\n\tapplication/octet-stream; name="a.asc"')).mediaType, 'application/octet-stream');
    assert.equal(contentTypeOfPart(part('Content-Description: x\nCONTENT-TYPE: text/html')).mediaType, 'text/html');
  });

  it('is text/plain when the part has no Content-Type, or one naming no type', () => {
    assert.equal(contentTypeOfPart(part('')).mediaType, 'text/plain');
    assert.equal(contentTypeOfPart(part('Content-Disposition: inline')).mediaType, 'text/plain');
    assert.equal(contentTypeOfPart(part('X-Content-Type: application/pgp-encrypted')).mediaType, 'text/plain');
    assert.equal(contentTypeOfPart(part('Content-Description: not\r\n Content-Type: application/pgp-encrypted')).mediaType, 'text/plain', 'a folded line is not a field');
    assert.equal(contentTypeOfPart(part('Content-Type:')).mediaType, 'text/plain');
  });
});
