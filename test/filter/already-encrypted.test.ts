import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as openpgp from 'openpgp';
import { armorBuffer } from '../../src/crypto/armor.js';
import { packetHeader } from '../../src/crypto/packets.js';
import { alreadyEncryptedReason, ENCRYPTED_PEEK_BYTES, needsLongerLook } from '../../src/filter/already-encrypted.js';
import { INLINE_PEEK_BYTES, type ContentType } from '../../src/mime/inspect.js';

const packet = (tag: number, body: Buffer) => Buffer.concat([packetHeader(tag, body.length), body]);
const rsa4096Pkesk = () => packet(1, Buffer.concat([Buffer.from([3]), randomBytes(8), Buffer.from([1, 0x10, 0x00, 0x80]), randomBytes(511)]));
/** An encrypted OpenPGP message to `recipients` RSA-4096 keys, armored with CRLF. */
const encrypted = (recipients = 1, dataBytes = 200) =>
  armorBuffer(Buffer.concat([...Array.from({ length: recipients }, rsa4096Pkesk), packet(18, Buffer.concat([Buffer.from([1]), randomBytes(dataBytes)]))]), '\r\n').toString('latin1');

const PGP_MIME: ContentType = { mediaType: 'multipart/encrypted', params: { protocol: 'application/pgp-encrypted', boundary: 'b' } };
const TEXT: ContentType = { mediaType: 'text/plain', params: {} };
const CONTROL = '--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n';
const pgpMimeBody = (armor: string, { control = CONTROL, preamble = '', epilogue = '' } = {}) =>
  `${preamble}${control}--b\r\nContent-Type: application/octet-stream\r\n\r\n${armor}\r\n--b--\r\n${epilogue}`;

/** The reason for a body given whole (or its first ENCRYPTED_PEEK_BYTES when longer), as the pipeline reads it. */
function reason(type: ContentType, body: string | Buffer, transferEncoding = '7bit'): string | undefined {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body, 'latin1');
  return alreadyEncryptedReason(type, transferEncoding, { bytes: bytes.subarray(0, ENCRYPTED_PEEK_BYTES), complete: bytes.length <= ENCRYPTED_PEEK_BYTES });
}

describe('already encrypted: the structural check', () => {
  describe('PGP/MIME', () => {
    it('passes a control part and one encrypted message, with or without preamble and epilogue, CRLF or LF', () => {
      const armor = encrypted();
      assert.equal(reason(PGP_MIME, pgpMimeBody(armor)), 'PGP/MIME');
      assert.equal(reason(PGP_MIME, pgpMimeBody(armor, { preamble: 'This is an OpenPGP/MIME encrypted message.\r\n', epilogue: '\r\n' })), 'PGP/MIME');
      assert.equal(reason(PGP_MIME, pgpMimeBody(armor).replace(/\r\n/g, '\n')), 'PGP/MIME');
      const folded = { mediaType: 'multipart/encrypted', params: { protocol: 'Application/PGP-Encrypted', boundary: 'b' } };
      assert.equal(reason(folded, pgpMimeBody(armor)), 'PGP/MIME');
      assert.equal(reason(PGP_MIME, pgpMimeBody(armor, { control: '--b\r\nContent-Type: application/pgp-encrypted\r\n\r\n\r\nVersion: 1\r\n\r\n' })), 'PGP/MIME');
    });

    const refused: Array<[string, ContentType, string]> = [
      ['no protocol', { mediaType: 'multipart/encrypted', params: { boundary: 'b' } }, pgpMimeBody(encrypted())],
      ['another protocol', { mediaType: 'multipart/encrypted', params: { protocol: 'application/pkcs7-mime', boundary: 'b' } }, pgpMimeBody(encrypted())],
      ['no boundary', { mediaType: 'multipart/encrypted', params: { protocol: 'application/pgp-encrypted' } }, pgpMimeBody(encrypted())],
      ['another boundary', PGP_MIME, pgpMimeBody(encrypted()).replace(/--b/g, '--c')],
      ['a control part of another type', PGP_MIME, pgpMimeBody(encrypted(), { control: '--b\r\nContent-Type: text/plain\r\n\r\nVersion: 1\r\n' })],
      ['a control part without Version: 1', PGP_MIME, pgpMimeBody(encrypted(), { control: '--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 2\r\n' })],
      ['plaintext in the control part', PGP_MIME, pgpMimeBody(encrypted(), { control: `${CONTROL}Secret meeting at noon.\r\n` })],
      ['only one part', PGP_MIME, `${CONTROL}--b--\r\n`],
      ['plaintext as the second part', PGP_MIME, pgpMimeBody('Secret meeting at noon.')],
      ['plaintext after the armor in the second part', PGP_MIME, pgpMimeBody(`${encrypted()}\r\nSecret meeting at noon.`)],
      ['plaintext before the armor in the second part', PGP_MIME, pgpMimeBody(`Secret meeting at noon.\r\n${encrypted()}`)],
      ['a third part', PGP_MIME, pgpMimeBody(`${encrypted()}\r\n--b\r\nContent-Type: text/plain\r\n\r\nSecret meeting at noon.`)],
      ['a whole body without its close delimiter', PGP_MIME, pgpMimeBody(encrypted()).replace('--b--\r\n', '')],
      ['session-key packets but no encrypted data', PGP_MIME, pgpMimeBody(armorBuffer(rsa4096Pkesk(), '\r\n').toString('latin1'))],
    ];
    for (const [name, type, body] of refused) {
      it(`encrypts what has ${name}`, () => assert.equal(reason(type, body), undefined));
    }

    it('reads a big message through its window: 100 RSA-4096 recipients pass, 300 are encrypted again', () => {
      const hundred = pgpMimeBody(encrypted(100, 400_000));
      assert.ok(hundred.length > 2 * ENCRYPTED_PEEK_BYTES && hundred.indexOf('--b--') > ENCRYPTED_PEEK_BYTES);
      assert.equal(reason(PGP_MIME, hundred), 'PGP/MIME');
      const window = Buffer.from(hundred, 'latin1').subarray(0, ENCRYPTED_PEEK_BYTES);
      assert.equal(alreadyEncryptedReason(PGP_MIME, '7bit', { bytes: window, complete: true }), undefined, 'the same bytes as a whole body are cut short');
      // The encrypted data starts beyond the window: not recognised, so encrypted again (safe).
      assert.equal(reason(PGP_MIME, pgpMimeBody(encrypted(300))), undefined);
    });
  });

  describe('inline PGP and application/pgp-encrypted', () => {
    it('passes a body that is one encrypted message, white space around it', () => {
      assert.equal(reason(TEXT, `\r\n  ${encrypted()}\r\n\r\n`), 'inline PGP');
      assert.equal(reason({ mediaType: 'application/pgp-encrypted', params: {} }, encrypted()), 'application/pgp-encrypted');
      assert.equal(reason(TEXT, encrypted(100, 300_000)), 'inline PGP', 'read through its window');
    });

    // Found by test/fuzz (corpus/pipeline-inline-beyond-peek.json): the pipeline looks for the armor within the first
    // INLINE_PEEK_BYTES, but the check took any window it was given, so whether such a body passed depended on chunks.
    it('looks for an inline block behind at most INLINE_PEEK_BYTES of white space, whatever the window holds', () => {
      const late = `${' '.repeat(INLINE_PEEK_BYTES)}${encrypted()}`;
      assert.equal(needsLongerLook(TEXT, Buffer.from(late, 'latin1')), false);
      assert.equal(reason(TEXT, late), undefined, 'encrypted again (safe), however much of the body was read');
      assert.equal(reason(TEXT, `${' '.repeat(INLINE_PEEK_BYTES - 100)}${encrypted()}`), 'inline PGP');
    });

    const refused: Array<[string, string]> = [
      ['text after the armor', `${encrypted()}\r\n-- \r\nMailing list footer\r\n`],
      ['text before the armor', `Hello\r\n${encrypted()}`],
      ['a public key block', '-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\nmQINBF\r\n-----END PGP PUBLIC KEY BLOCK-----\r\n'],
      ['a signed message', '-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nSecret meeting at noon.\r\n'],
      ['armor lines around plaintext', '-----BEGIN PGP MESSAGE-----\r\n\r\nSecret meeting at noon.\r\n-----END PGP MESSAGE-----\r\n'],
      ['armor cut short', encrypted().slice(0, 200)],
    ];
    for (const [name, body] of refused) {
      it(`encrypts ${name}`, () => {
        assert.equal(reason(TEXT, body), undefined);
        assert.equal(reason({ mediaType: 'application/pgp-encrypted', params: {} }, body), undefined);
      });
    }
  });

  describe('S/MIME', () => {
    const SMIME: ContentType = { mediaType: 'application/pkcs7-mime', params: { 'smime-type': 'enveloped-data' } };
    const enveloped = Buffer.from([0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00]);
    const authEnveloped = Buffer.from([0x30, 0x80, 0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17, 0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00]);
    const base64 = (bytes: Buffer) => `${bytes.toString('base64').replace(/.{64}/g, '$&\r\n')}\r\n`;

    it('passes (Auth)EnvelopedData in base64 or binary, also past the window', () => {
      const long = Buffer.concat([enveloped, randomBytes(300_000)]);
      assert.equal(reason(SMIME, base64(long), 'base64'), 'S/MIME application/pkcs7-mime');
      assert.equal(reason({ mediaType: 'application/x-pkcs7-mime', params: {} }, base64(Buffer.concat([authEnveloped, Buffer.alloc(4)])), 'base64'), 'S/MIME application/x-pkcs7-mime');
      assert.equal(reason(SMIME, long, 'binary'), 'S/MIME application/pkcs7-mime');
    });

    it('encrypts plaintext, SignedData, and base64 that is not base64', () => {
      assert.equal(reason(SMIME, base64(Buffer.from('Secret meeting at noon.')), 'base64'), undefined);
      const signed = Buffer.from(enveloped);
      signed[12] = 0x02;
      assert.equal(reason(SMIME, base64(signed), 'base64'), undefined);
      assert.equal(reason(SMIME, `${base64(enveloped)}Secret meeting at noon.\r\n`, 'base64'), undefined);
      assert.equal(reason(SMIME, base64(enveloped), '7bit'), undefined, 'base64 text read as DER');
    });
  });

  it('reads further only for what may be encrypted', () => {
    assert.equal(needsLongerLook(PGP_MIME, Buffer.alloc(0)), true);
    assert.equal(needsLongerLook({ mediaType: 'application/pkcs7-mime', params: {} }, Buffer.alloc(0)), true);
    assert.equal(needsLongerLook({ mediaType: 'application/x-pkcs7-mime', params: {} }, Buffer.alloc(0)), true);
    assert.equal(needsLongerLook({ mediaType: 'application/pgp-encrypted', params: {} }, Buffer.alloc(0)), true);
    assert.equal(needsLongerLook(TEXT, Buffer.from('\r\n -----BEGIN PGP MESSAGE-----\r\n')), true);
    assert.equal(needsLongerLook(TEXT, Buffer.from('Hello')), false);
    assert.equal(needsLongerLook(TEXT, Buffer.from('Hello\r\n-----BEGIN PGP MESSAGE-----\r\n')), false, 'text before the armor');
    assert.equal(needsLongerLook(TEXT, Buffer.alloc(0)), false);
    assert.equal(needsLongerLook({ mediaType: 'multipart/mixed', params: {} }, Buffer.from('-----BEGIN PGP MESSAGE-----')), false);
  });

  it('looks at no other media type, whatever its body holds', () => {
    for (const mediaType of ['multipart/mixed', 'multipart/signed', 'text/html', 'application/octet-stream', 'message/rfc822']) {
      assert.equal(reason({ mediaType, params: { protocol: 'application/pgp-encrypted', boundary: 'b' } }, encrypted()), undefined, mediaType);
      assert.equal(reason({ mediaType, params: { protocol: 'application/pgp-encrypted', boundary: 'b' } }, pgpMimeBody(encrypted())), undefined, mediaType);
    }
  });

  it('cuts a body given whole at the window itself, and then does not take it as whole', () => {
    const hundred = Buffer.from(pgpMimeBody(encrypted(100, 400_000)), 'latin1');
    assert.equal(alreadyEncryptedReason(PGP_MIME, '7bit', { bytes: hundred, complete: true }), 'PGP/MIME');
    const inline = Buffer.from(encrypted(100, 400_000), 'latin1');
    assert.equal(alreadyEncryptedReason(TEXT, '7bit', { bytes: inline, complete: true }), 'inline PGP');
  });

  describe('PGP/MIME seen through a window that ends early', () => {
    const body = pgpMimeBody(encrypted());
    const window = (end: number) => alreadyEncryptedReason(PGP_MIME, '7bit', { bytes: Buffer.from(body.slice(0, end), 'latin1'), complete: false });

    it('encrypts when the window ends in the control part or before the armor opens', () => {
      assert.equal(window(body.indexOf('Version: 1') + 4), undefined, 'inside the control part');
      assert.equal(window(body.indexOf('--b\r\nContent-Type: application/octet-stream') + 10), undefined, 'in the second delimiter');
      assert.equal(window(body.indexOf('-----BEGIN')), undefined, 'before the armor');
    });

    it('passes when the window ends inside the armor of the encrypted part', () => {
      assert.equal(window(body.indexOf('-----END')), 'PGP/MIME');
    });

    it('encrypts a whole body whose armor is cut short', () => {
      const armor = encrypted();
      assert.equal(reason(PGP_MIME, pgpMimeBody(armor.slice(0, armor.indexOf('-----END')))), undefined);
      assert.equal(reason(PGP_MIME, pgpMimeBody(armor.slice(0, 120))), undefined);
    });
  });

  describe('real OpenPGP messages (openpgp.js)', () => {
    let key: openpgp.PrivateKey;
    let toKey: string;
    let toPassword: string;
    let signedOnly: string;
    let literalOnly: string;
    before(async () => {
      key = (await openpgp.generateKey({ userIDs: [{ email: 'alice@example.test' }], format: 'object' })).privateKey;
      const message = await openpgp.createMessage({ binary: Buffer.from('Secret meeting at noon.\r\n') });
      toKey = await openpgp.encrypt({ message, encryptionKeys: key.toPublic(), format: 'armored' });
      toPassword = await openpgp.encrypt({ message, passwords: ['secret'], format: 'armored' });
      signedOnly = await openpgp.sign({ message, signingKeys: key, format: 'armored' });
      literalOnly = message.armor();
    });

    it('passes a message encrypted to a key or to a password, inline, as application/pgp-encrypted and as PGP/MIME', () => {
      for (const armored of [toKey, toPassword]) {
        assert.match(armored, /^-----BEGIN PGP MESSAGE-----/);
        assert.equal(reason(TEXT, armored), 'inline PGP');
        assert.equal(reason({ mediaType: 'application/pgp-encrypted', params: {} }, armored), 'application/pgp-encrypted');
        assert.equal(reason(PGP_MIME, pgpMimeBody(armored)), 'PGP/MIME');
      }
    });

    it('encrypts a signed-only or literal-data-only message in the same PGP MESSAGE armor', () => {
      for (const [name, armored] of [['signed only', signedOnly], ['literal data only', literalOnly]] as const) {
        assert.match(armored, /^-----BEGIN PGP MESSAGE-----/, name);
        assert.equal(reason(TEXT, armored), undefined, name);
        assert.equal(reason({ mediaType: 'application/pgp-encrypted', params: {} }, armored), undefined, name);
        assert.equal(reason(PGP_MIME, pgpMimeBody(armored)), undefined, name);
      }
    });
  });
});
