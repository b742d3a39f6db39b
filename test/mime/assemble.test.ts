/**
 * The assembler (src/mime/assemble.ts): the bytes around an encrypted copy's armor, for PGP/MIME (RFC 3156)
 * and inline PGP. The exact lines first, then whole copies made with Lacre's own crypto, read back by
 * mailparser, decrypted by GnuPG, and recognised as encrypted by Lacre's own check.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import libqp from 'libqp';
import { simpleParser } from 'mailparser';
import * as openpgp from 'openpgp';
import { encryptBuffered } from '../../src/crypto/buffered.js';
import { alreadyEncryptedReason } from '../../src/filter/already-encrypted.js';
import { contentEntityHead, inlineEnvelope, newBoundary, pgpMimeEnvelope, type Envelope } from '../../src/mime/assemble.js';
import type { SplitMessage } from '../../src/mime/header.js';
import { contentTypeOf, transferEncodingOf } from '../../src/mime/inspect.js';
import { createGpgHome, decrypt, generateKey, type GpgHome } from '../helpers/gpg.js';
import { splitWhole } from './read.js';

interface Message {
  readonly split: SplitMessage;
  readonly body: Buffer;
}

async function read(raw: Buffer | string): Promise<Message> {
  const split = await splitWhole(raw);
  return { split, body: split.bodyStart };
}

const text = (buffer: Buffer) => buffer.toString('latin1');
const lines = (eol: string, ...all: string[]) => all.map((line) => `${line}${eol}`).join('');

const HEADER = [
  'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000',
  'From: Sender <s@example.net>',
  'Subject: hi',
  ' folded',
  'Content-Type: multipart/mixed;',
  '\tboundary="b1"',
  'To: alice@example.test',
  'content-transfer-encoding: 8bit',
  'Content-ID: <part@example.net>',
];
const MESSAGE = lines('\r\n', ...HEADER, '', '--b1', 'Content-Type: text/plain; charset=utf-8', '', 'Gr\xc3\xbc\xc3\x9fe', '--b1--');

const OUTER = lines('\r\n', 'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000', 'From: Sender <s@example.net>', 'Subject: hi', ' folded', 'To: alice@example.test');

/** What pgpMimeEnvelope writes after the outer header lines, with this boundary. */
const pgpMimeLines = (eol: string, boundary: string) =>
  lines(
    eol,
    `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";`,
    `\tboundary="${boundary}"`,
    '',
    'This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)',
    `--${boundary}`,
    'Content-Type: application/pgp-encrypted',
    'Content-Description: PGP/MIME version identification',
    '',
    'Version: 1',
    '',
    `--${boundary}`,
    'Content-Type: application/octet-stream; name="encrypted.asc"',
    'Content-Description: OpenPGP encrypted message',
    'Content-Disposition: inline; filename="encrypted.asc"',
    '',
  );

describe('assembler', () => {
  describe('contentEntityHead', () => {
    it('is the Content-* lines as received, in order, then the separator', async () => {
      const { split } = await read(MESSAGE);
      assert.equal(text(contentEntityHead(split)), lines('\r\n', 'Content-Type: multipart/mixed;', '\tboundary="b1"', 'content-transfer-encoding: 8bit', 'Content-ID: <part@example.net>', ''));
    });

    it('is only the separator when there are no Content-* lines, and has none when the message had none', async () => {
      assert.equal(text(contentEntityHead((await read('From: a\nSubject: s\n\nbody')).split)), '\n');
      assert.equal(text(contentEntityHead((await read('Subject: s\r\nContent-Type: text/plain')).split)), 'Content-Type: text/plain');
    });
  });

  describe('pgpMimeEnvelope', () => {
    it('keeps every other header line byte for byte, drops the Content-* lines, adds MIME-Version and the RFC 3156 structure', async () => {
      const { split } = await read(MESSAGE);
      const envelope = pgpMimeEnvelope(split, 'BOUNDARY');
      assert.equal(text(envelope.prefix), `${OUTER}MIME-Version: 1.0\r\n${pgpMimeLines('\r\n', 'BOUNDARY')}`);
      assert.equal(text(envelope.suffix), '\r\n--BOUNDARY--\r\n');
    });

    it('keeps the message’s own MIME-Version where it stands and adds none', async () => {
      const { split } = await read(`Subject: s\r\nmime-version: 1.0 (produced by hand)\r\nContent-Type: text/plain\r\nTo: t\r\n\r\nbody\r\n`);
      const prefix = text(pgpMimeEnvelope(split, 'B').prefix);
      assert.equal(prefix, `Subject: s\r\nmime-version: 1.0 (produced by hand)\r\nTo: t\r\n${pgpMimeLines('\r\n', 'B')}`);
    });

    it('writes its own lines with the message’s line ending', async () => {
      const { split } = await read(MESSAGE.replace(/\r\n/g, '\n'));
      const envelope = pgpMimeEnvelope(split, 'B');
      assert.equal(text(envelope.prefix), `${OUTER.replace(/\r\n/g, '\n')}MIME-Version: 1.0\n${pgpMimeLines('\n', 'B')}`);
      assert.equal(text(envelope.suffix), '\n--B--\n');
    });

    it('starts its own lines on a new line after a header-only message without a final line ending', async () => {
      const { split } = await read('Content-Type: text/plain\r\nSubject: last line');
      assert.equal(text(pgpMimeEnvelope(split, 'B').prefix), `Subject: last line\r\nMIME-Version: 1.0\r\n${pgpMimeLines('\r\n', 'B')}`);
    });

    it('makes a new boundary each time, which cannot occur in armor ("_" is not in its alphabet)', () => {
      const boundaries = new Set(Array.from({ length: 100 }, () => newBoundary()));
      assert.equal(boundaries.size, 100);
      for (const boundary of boundaries) assert.match(boundary, /^=_lacre_[0-9a-f]{24}$/);
    });

    it('uses a fresh boundary when none is given', async () => {
      const { split } = await read(MESSAGE);
      const first = text(pgpMimeEnvelope(split).prefix);
      const second = text(pgpMimeEnvelope(split).prefix);
      const boundaryOf = (prefix: string) => /boundary="([^"]+)"/.exec(prefix)?.[1];
      assert.match(boundaryOf(first) ?? '', /^=_lacre_[0-9a-f]{24}$/);
      assert.notEqual(boundaryOf(first), boundaryOf(second));
    });
  });

  describe('inlineEnvelope', () => {
    it('keeps the header as received but Content-Transfer-Encoding, then the separator; nothing after the armor', async () => {
      const { split } = await read(MESSAGE);
      const envelope = inlineEnvelope(split);
      const kept = lines('\r\n', ...HEADER.filter((line) => !line.startsWith('content-transfer-encoding')), '');
      assert.equal(text(envelope.prefix), kept);
      assert.equal(envelope.suffix.length, 0);
    });

    it('keeps a bare-LF separator, and adds one in the message’s line ending when there was none', async () => {
      assert.equal(text(inlineEnvelope((await read('Subject: s\nContent-Transfer-Encoding: base64\n\nYQ==\n')).split).prefix), 'Subject: s\n\n');
      assert.equal(text(inlineEnvelope((await read('Subject: s\r\nTo: t\r\n')).split).prefix), 'Subject: s\r\nTo: t\r\n\r\n');
      assert.equal(text(inlineEnvelope((await read('Subject: s\r\nTo: t')).split).prefix), 'Subject: s\r\nTo: t\r\n\r\n');
    });
  });

  describe('whole copies, encrypted by Lacre, read by mailparser and GnuPG', () => {
    let home: GpgHome;
    let key: openpgp.PublicKey;
    before(async () => {
      home = await createGpgHome();
      key = await openpgp.readKey({ armoredKey: (await generateKey(home, { email: 'alice@example.test' })).publicArmored });
    });
    after(() => home.remove());

    const assembled = async (envelope: Envelope, plaintext: Buffer, eol: '\r\n' | '\n') => {
      const [armor] = await encryptBuffered({ plaintext, copies: [{ keys: [key] }], eol });
      return Buffer.concat([envelope.prefix, Buffer.from(armor!), envelope.suffix]);
    };

    for (const eol of ['\r\n', '\n'] as const) {
      const name = eol === '\r\n' ? 'CRLF' : 'bare LF';

      it(`${name}: a PGP/MIME copy is two parts, the second decrypting to the exact content entity`, async () => {
        const { split, body } = await read(MESSAGE.replace(/\r\n/g, eol));
        const entity = Buffer.concat([contentEntityHead(split), body]);
        const envelope = pgpMimeEnvelope(split);
        const boundary = /boundary="([^"]+)"/.exec(text(envelope.prefix))![1]!;
        const copy = await assembled(envelope, entity, eol);

        assert.equal(text(copy).split(`--${boundary}`).length - 1, 3, 'the boundary occurs in the two delimiters and the close delimiter only');
        assert.ok(text(copy).startsWith(OUTER.replace(/\r\n/g, eol)), 'outer header lines first, as received');

        const parsed = await simpleParser(copy);
        assert.deepEqual(parsed.headers.get('content-type'), { value: 'multipart/encrypted', params: { protocol: 'application/pgp-encrypted', boundary } });
        assert.equal(parsed.headers.get('mime-version'), '1.0');
        assert.equal(parsed.subject, 'hi folded');
        assert.equal(parsed.attachments.length, 2);
        const [control, encrypted] = parsed.attachments;
        assert.equal(control!.contentType, 'application/pgp-encrypted');
        assert.equal(control!.content.toString('latin1'), `Version: 1${eol}`);
        assert.equal(encrypted!.contentType, 'application/octet-stream');
        assert.equal(encrypted!.filename, 'encrypted.asc');
        assert.deepEqual(await decrypt(home, encrypted!.content), entity);

        const reread = await read(copy);
        assert.equal(alreadyEncryptedReason(contentTypeOf(reread.split.fields), transferEncodingOf(reread.split.fields), { bytes: reread.body, complete: true }), 'PGP/MIME', 'Lacre passes its own copy through');
      });
    }

    it('an inline copy is one text/plain body of armor, decrypting to the decoded text', async () => {
      const raw = lines('\r\n', 'From: s@example.net', 'Content-Type: text/plain; charset=iso-8859-1', 'Content-Transfer-Encoding: quoted-printable', 'Subject: s', '', 'Gr=FC=DFe aus K=F6ln=', ', soft broken.');
      const { split, body } = await read(raw);
      const decoded = libqp.decode(text(body));
      const copy = await assembled(inlineEnvelope(split), decoded, '\r\n');

      const parsed = await simpleParser(copy);
      assert.equal(parsed.headers.get('content-transfer-encoding'), undefined);
      assert.deepEqual(parsed.headers.get('content-type'), { value: 'text/plain', params: { charset: 'iso-8859-1' } });
      assert.match(parsed.text ?? '', /^-----BEGIN PGP MESSAGE-----\n[\s\S]*\n-----END PGP MESSAGE-----\n$/);
      assert.equal(parsed.attachments.length, 0);
      assert.equal((await decrypt(home, copy)).toString('latin1'), 'Gr\xfc\xdfe aus K\xf6ln, soft broken.\r\n');

      const reread = await read(copy);
      assert.equal(alreadyEncryptedReason(contentTypeOf(reread.split.fields), transferEncodingOf(reread.split.fields), { bytes: reread.body, complete: true }), 'inline PGP');
    });
  });
});
