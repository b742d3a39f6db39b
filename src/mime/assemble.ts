import { secureRandomBytes } from '../util/random.js';
import { findField, isContentField, type HeaderField, type SplitMessage } from './header.js';

/** The bytes around the armored block of one encrypted copy; the armor itself is streamed between them. */
export interface Envelope {
  readonly prefix: Buffer;
  readonly suffix: Buffer;
}

/** The content entity PGP/MIME encrypts: Content-* lines as received, the separator, then the body. */
export function contentEntityHead(split: SplitMessage): Buffer {
  return Buffer.concat([...split.fields.filter(isContentField).map((f) => f.raw), split.separator]);
}

function outerFields(fields: readonly HeaderField[], keep: (field: HeaderField) => boolean, eol: string): Buffer[] {
  const kept = fields.filter(keep).map((field) => field.raw);
  const last = kept[kept.length - 1];
  // A header-only message may end without a line ending; our own lines must start on a new line.
  if (last && last[last.length - 1] !== 0x0a) kept.push(Buffer.from(eol));
  return kept;
}

export function newBoundary(): string {
  return `=_lacre_${secureRandomBytes(12).toString('hex')}`;
}

/** RFC 3156 multipart/encrypted around the armored content entity. */
export function pgpMimeEnvelope(split: SplitMessage, boundary = newBoundary()): Envelope {
  const e = split.eol;
  const lines = [
    ...(findField(split.fields, 'mime-version') ? [] : [`MIME-Version: 1.0`]),
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
    '',
  ];
  return {
    prefix: Buffer.concat([...outerFields(split.fields, (f) => !isContentField(f), e), Buffer.from(lines.join(e))]),
    suffix: Buffer.from(['', `--${boundary}--`, ''].join(e)),
  };
}

/**
 * Inline PGP: the body becomes one armored block. Headers stay as received but Content-Transfer-Encoding,
 * which no longer applies (the armor is 7-bit and the plaintext inside it is the decoded body).
 */
export function inlineEnvelope(split: SplitMessage): Envelope {
  const e = split.eol;
  const keep = (f: HeaderField) => f.lowerName !== 'content-transfer-encoding';
  const separator = split.separator.length > 0 ? split.separator : Buffer.from(e);
  return {
    prefix: Buffer.concat([...outerFields(split.fields, keep, e), separator]),
    suffix: Buffer.alloc(0),
  };
}
