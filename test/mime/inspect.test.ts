/**
 * The detector (src/mime/inspect.ts): media type and parameters, transfer encoding, Message-ID, and whether
 * inline PGP suits the message, read from header fields as the splitter gives them.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { contentTypeOf, inlineEligible, messageIdOf, transferEncodingOf } from '../../src/mime/inspect.js';
import { fieldsOf } from './read.js';

const typeOf = async (header: string) => contentTypeOf(await fieldsOf(header));

describe('detector', () => {
  describe('contentTypeOf', () => {
    it('is text/plain with no parameters when there is no Content-Type (RFC 2045 §5.2)', async () => {
      assert.deepEqual(await typeOf('From: a@example.net\r\nSubject: s\r\n'), { mediaType: 'text/plain', params: {} });
      assert.deepEqual(await typeOf(''), { mediaType: 'text/plain', params: {} });
    });

    it('is text/plain when the field is there but names no type', async () => {
      assert.equal((await typeOf('Content-Type:\r\n')).mediaType, 'text/plain');
      assert.deepEqual(await typeOf('Content-Type: ; charset=utf-8\r\n'), { mediaType: 'text/plain', params: { charset: 'utf-8' } });
    });

    it('lower-cases the media type and parameter names, keeps parameter values as written', async () => {
      assert.deepEqual(await typeOf('CONTENT-type: Multipart/Mixed; BOUNDARY="Ab=Cd"; Charset=UTF-8\r\n'), {
        mediaType: 'multipart/mixed',
        params: { boundary: 'Ab=Cd', charset: 'UTF-8' },
      });
    });

    it('reads a folded field, tabs and all', async () => {
      const type = await typeOf('Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n\tboundary="=_lacre_0123"\r\n');
      assert.deepEqual(type, { mediaType: 'multipart/encrypted', params: { protocol: 'application/pgp-encrypted', boundary: '=_lacre_0123' } });
    });

    it('reads quoted values with separators and escapes, unquoted tokens, no white space', async () => {
      assert.equal((await typeOf('Content-Type: multipart/mixed; boundary="a;b=c d"\r\n')).params.boundary, 'a;b=c d');
      assert.equal((await typeOf('Content-Type: multipart/mixed; boundary="a\\"b"\r\n')).params.boundary, 'a"b');
      assert.deepEqual((await typeOf('Content-Type: text/plain;charset=us-ascii;format=flowed\r\n')).params, { charset: 'us-ascii', format: 'flowed' });
    });

    it('joins RFC 2231 continuations and decodes RFC 2231 charset/language values', async () => {
      assert.equal((await typeOf('Content-Type: multipart/mixed;\r\n boundary*0="first-half-";\r\n boundary*1="second-half"\r\n')).params.boundary, 'first-half-second-half');
      assert.equal((await typeOf("Content-Type: text/plain; name*=utf-8''%E2%82%AC%20rates.txt\r\n")).params.name, '€ rates.txt');
      assert.equal((await typeOf("Content-Type: text/plain; name*0*=us-ascii'en'This%20is%20; name*1*=%2A%2A%2Afun%2A%2A%2A\r\n")).params.name, 'This is ***fun***');
    });

    it('reads the first Content-Type of several, and the first of a repeated parameter', async () => {
      assert.equal((await typeOf('Content-Type: text/html\r\nContent-Type: multipart/encrypted\r\n')).mediaType, 'text/html');
      assert.equal((await typeOf('Content-Type: multipart/mixed; boundary=one; boundary=two\r\n')).params.boundary, 'one');
    });

    it('keeps an empty boundary empty (what checks it must refuse it)', async () => {
      assert.equal((await typeOf('Content-Type: multipart/mixed; boundary=\r\n')).params.boundary, '');
    });
  });

  it('transferEncodingOf: lower-cased and trimmed, 7bit when absent (RFC 2045 §6.1)', async () => {
    assert.equal(transferEncodingOf(await fieldsOf('Subject: s\r\n')), '7bit');
    assert.equal(transferEncodingOf(await fieldsOf('Content-Transfer-Encoding:  Base64 \r\n')), 'base64');
    assert.equal(transferEncodingOf(await fieldsOf('content-transfer-encoding: Quoted-Printable\r\n')), 'quoted-printable');
    assert.equal(transferEncodingOf(await fieldsOf('Content-Transfer-Encoding: 8bit\r\nContent-Transfer-Encoding: base64\r\n')), '8bit', 'the first');
  });

  it('messageIdOf: the unfolded value, at most 250 characters; undefined when absent', async () => {
    assert.equal(messageIdOf(await fieldsOf('Message-ID: <1@example.net>\r\n')), '<1@example.net>');
    assert.equal(messageIdOf(await fieldsOf('message-id:\r\n <folded@example.net>\r\n')), '<folded@example.net>');
    assert.equal(messageIdOf(await fieldsOf('Subject: s\r\n')), undefined);
    const long = messageIdOf(await fieldsOf(`Message-ID: <${'x'.repeat(400)}@example.net>\r\n`));
    assert.equal(long?.length, 250);
    assert.ok(long?.startsWith('<xxx'));
  });

  it('inlineEligible: a text/plain message only', async () => {
    assert.equal(inlineEligible(await typeOf('Subject: no Content-Type\r\n')), true);
    assert.equal(inlineEligible(await typeOf('Content-Type: Text/Plain; charset=iso-8859-1\r\n')), true);
    for (const type of ['text/html', 'multipart/alternative; boundary=b', 'multipart/mixed; boundary=b', 'application/octet-stream', 'text/plain-extended']) {
      assert.equal(inlineEligible(await typeOf(`Content-Type: ${type}\r\n`)), false, type);
    }
  });
});
