/**
 * Messages for the property tests: byte strings dense in what the splitter, the header reader and the
 * already-encrypted detector look at (field names, folding, blank lines in every line ending, boundaries,
 * armor, real encrypted blocks, NUL and 8-bit bytes), beside plain random bytes.
 */
import fc from 'fast-check';

const EOLS = ['\r\n', '\n', '\r', ''];

const HEADER_LINES = [
  'From: a@example.test',
  'Subject: fuzz',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  'Content-Type: text/plain',
  'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"',
  'Content-Type: multipart/encrypted; boundary=b; protocol=application/pgp-encrypted',
  'Content-Type: multipart/mixed; boundary="b"',
  'Content-Type: application/pgp-encrypted',
  'Content-Type: application/pkcs7-mime; smime-type=enveloped-data',
  'Content-Type:',
  'Content-Type: ;;;=="',
  'content-type : text/plain',
  'Content-Transfer-Encoding: base64',
  'Content-Transfer-Encoding: quoted-printable',
  'Content-Transfer-Encoding: 8bit',
  'Content-Disposition: inline',
  ' folded continuation',
  '\tboundary="b"',
  'X-Eight-Bit: caf\xe9',
  'From nobody Mon Jan  1 00:00:00 2024',
  'no colon here',
  ':',
  '',
];

const BODY_PIECES = [
  'hello',
  '.',
  '..',
  '--b',
  '--b--',
  'Version: 1',
  'Content-Type: application/pgp-encrypted',
  'Content-Type: application/octet-stream',
  '-----BEGIN PGP MESSAGE-----',
  '-----END PGP MESSAGE-----',
  'aGVsbG8gd29ybGQ=',
  '=3D=0A=',
  '=',
  '=4',
  '=ZZ',
  '=\r\n',
  'a_b-c',
  '\t',
  '\x00',
  '\xff\xfe',
  ' ',
  '',
];

/** A line ending, mostly a consistent one. */
const eol = fc.constantFrom(...EOLS, '\r\n', '\r\n', '\n');

function lines(pieces: fc.Arbitrary<string>, maxLength: number): fc.Arbitrary<string> {
  return fc.array(fc.tuple(pieces, eol), { maxLength }).map((parts) => parts.map(([text, end]) => text + end).join(''));
}

/** `armored` are real encrypted messages (armored, line ending each), to put whole or cut into bodies. */
export function messageBytes(armored: readonly string[]): fc.Arbitrary<Buffer> {
  const text = fc.string({ unit: 'binary-ascii', maxLength: 40 });
  const headerPiece = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...HEADER_LINES) }, { weight: 1, arbitrary: text });
  const bodyPiece = fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...BODY_PIECES) },
    { weight: 2, arbitrary: fc.constantFrom(...armored) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...armored), fc.nat()).map(([block, at]) => block.slice(0, at % block.length)) },
    { weight: 1, arbitrary: text },
    // White space past the 8 KiB Lacre reads to find an inline block behind it (INLINE_PEEK_BYTES).
    { weight: 1, arbitrary: fc.constantFrom(' '.repeat(8200), '\r\n'.repeat(4100), '\n'.repeat(8192)) },
  );
  const structured = fc
    .tuple(lines(headerPiece, 8), fc.constantFrom(...EOLS), lines(bodyPiece, 10))
    .map(([header, separator, body]) => Buffer.from(header + separator + body, 'latin1'));
  const random = fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes));
  return fc.oneof({ weight: 4, arbitrary: structured }, { weight: 1, arbitrary: random });
}

/** Real encrypted content to build well-formed already-encrypted messages from (CRLF line endings). */
export interface EncryptedContent {
  /** One armored encrypted OpenPGP message. */
  readonly armor: string;
  /** The body of a PGP/MIME message (boundary "b"): the version part, then the armored part. */
  readonly pgpMimeBody: string;
  /** A base64 CMS EnvelopedData. */
  readonly smimeBody: string;
}

/**
 * Messages Lacre must pass untouched: PGP/MIME, S/MIME, inline PGP (white space around the block) and a top-level
 * application/pgp-encrypted, under a few ordinary header fields. Random bytes seldom build one.
 */
export function encryptedMessages(content: EncryptedContent): fc.Arbitrary<Buffer> {
  const fields = fc.subarray(['From: a@example.test', 'Subject: fuzz', 'MIME-Version: 1.0']).map((lines) => lines.map((line) => `${line}\r\n`).join(''));
  const space = fc.constantFrom('', '\r\n', ' \r\n', '\r\n\r\n', '\t');
  const encrypted = fc.oneof(
    fc.constant(`Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n${content.pgpMimeBody}`),
    fc.constant(`Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n${content.smimeBody}`),
    fc.tuple(fc.constantFrom('', 'Content-Type: text/plain\r\n'), space, space).map(([type, before, after]) => `${type}\r\n${before}${content.armor}${after}`),
    fc.tuple(space, space).map(([before, after]) => `Content-Type: application/pgp-encrypted\r\n\r\n${before}${content.armor}${after}`),
  );
  return fc.tuple(fields, encrypted).map(([header, rest]) => Buffer.from(header + rest, 'latin1'));
}
