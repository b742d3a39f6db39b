import { randomBytes } from 'node:crypto';

/** Messages that have broken other filters: each must come out byte for byte. */
export interface CorpusMessage {
  readonly name: string;
  readonly raw: Buffer;
  /** False for messages SMTP itself cannot carry unchanged (bare LF, NUL): tested below SMTP only. */
  readonly smtpSafe: boolean;
}

const crlf = (lines: string[]) => Buffer.from(lines.join('\r\n'), 'utf8');
const attachment = randomBytes(3000).toString('base64').replace(/.{76}/g, '$&\r\n');

export const corpus: CorpusMessage[] = [
  {
    name: 'simple text',
    smtpSafe: true,
    raw: crlf(['From: Sender <sender@example.net>', 'To: alice@example.test', 'Subject: hello', 'Message-ID: <simple@example.net>', '', 'Hello Alice.', '']),
  },
  {
    name: 'multipart with base64 attachment',
    smtpSafe: true,
    raw: crlf([
      'From: sender@example.net',
      'To: alice@example.test',
      'Subject: report',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      'preamble',
      '--b1',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      'Grüße, see attached.',
      '--b1',
      'Content-Type: application/octet-stream; name="data.bin"',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: attachment; filename="data.bin"',
      '',
      attachment,
      '--b1--',
      'epilogue',
      '',
    ]),
  },
  {
    name: '8-bit body and 8-bit header',
    smtpSafe: true,
    raw: crlf(['From: sender@example.net', 'To: alice@example.test', 'Subject: Überraschung ✓', 'Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: 8bit', '', 'Ünïcödé bödy — ✓', '']),
  },
  {
    name: 'folded and duplicate headers',
    smtpSafe: true,
    raw: crlf([
      'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000',
      'Received: from c by d;',
      '\tMon, 1 Jan 2024 00:00:01 +0000',
      'From: sender@example.net',
      'To: alice@example.test,',
      '    bob@example.test',
      'Subject: a very long subject line that was',
      ' folded over two lines',
      'Content-Type: text/plain;',
      '\tcharset="us-ascii"',
      'X-Dup: one',
      'X-Dup: two',
      '',
      'body',
      '',
    ]),
  },
  {
    name: 'dot-leading lines',
    smtpSafe: true,
    raw: crlf(['From: sender@example.net', 'To: alice@example.test', 'Subject: dots', '', '.', '..', '.leading dot', '...', 'end', '']),
  },
  {
    name: 'no final newline',
    smtpSafe: false,
    raw: Buffer.from('From: sender@example.net\r\nTo: alice@example.test\r\nSubject: no eol\r\n\r\nlast line without newline'),
  },
  {
    name: 'empty body',
    smtpSafe: true,
    raw: crlf(['From: sender@example.net', 'To: alice@example.test', 'Subject: empty', '', '']),
  },
  {
    name: 'header only',
    smtpSafe: true,
    raw: crlf(['From: sender@example.net', 'To: alice@example.test', 'Subject: header only', '']),
  },
  {
    name: 'malformed MIME',
    smtpSafe: true,
    raw: crlf([
      'From: sender@example.net',
      'To: alice@example.test',
      'Content-Type: multipart/mixed; boundary="never-closed"',
      'Content-Transfer-Encoding: bogus',
      '',
      '--wrong-boundary',
      'Content-Type: text/plain',
      '',
      'this part is never closed',
      '',
    ]),
  },
  {
    name: 'quoted-printable text',
    smtpSafe: true,
    raw: crlf(['From: sender@example.net', 'To: alice@example.test', 'Content-Type: text/plain; charset=iso-8859-1', 'Content-Transfer-Encoding: quoted-printable', '', 'Gr=FC=DFe aus K=F6ln, a long line that is soft=', ' broken.', '']),
  },
  {
    name: 'bare LF line endings',
    smtpSafe: false,
    raw: Buffer.from('From: sender@example.net\nTo: alice@example.test\nSubject: unix\nContent-Type: text/plain\n\nline one\nline two\n'),
  },
  {
    name: 'NUL bytes and a body line that looks like a header',
    smtpSafe: false,
    raw: Buffer.from('From: sender@example.net\r\nTo: alice@example.test\r\n\r\nX-Not-A-Header: body\r\nnul\u0000byte\r\n', 'latin1'),
  },
  {
    name: 'no blank line before the body',
    smtpSafe: true,
    raw: crlf(['From: sender@example.net', 'To: alice@example.test', 'Content-Type: text/plain', 'this line is body text without a separator', 'second', '']),
  },
];

/**
 * A real OpenPGP message (SKESK, old-format header, then SEIPD, new-format: `gpg --symmetric --armor`, passphrase
 * "test"), so that the messages below are encrypted in their structure, not only in their headers.
 */
const SYMMETRIC_ARMOR = [
  '-----BEGIN PGP MESSAGE-----',
  '',
  'jA0ECQMCDRtmPjm8FMX/0nsBRp3N59dqWed92HHLiq8ji+pGWqHBDtFwR/oHE6EV',
  'CrZCR5KmSNjeJmAus9vEYBZzrj3nzBtNHC8hc+Xs+s0u2rRo5JgbS/pIiALR0KPf',
  'K5Lr4tX+dQVGXFH4+9cS2m0TUGnLpV1xxtdpJzHwqo2QJZx7Dfx2pB14oZg=',
  '=hXGm',
  '-----END PGP MESSAGE-----',
];

/** A message already encrypted with PGP/MIME: passed untouched. */
export const pgpMimeMessage = crlf([
  'From: sender@example.net',
  'To: alice@example.test',
  'MIME-Version: 1.0',
  'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="x"',
  '',
  '--x',
  'Content-Type: application/pgp-encrypted',
  '',
  'Version: 1',
  '',
  '--x',
  'Content-Type: application/octet-stream',
  '',
  ...SYMMETRIC_ARMOR,
  '',
  '--x--',
  '',
]);

export const inlinePgpMessage = crlf([
  'From: sender@example.net',
  'To: alice@example.test',
  'Subject: inline',
  '',
  '',
  `  ${SYMMETRIC_ARMOR[0]}`,
  ...SYMMETRIC_ARMOR.slice(1),
  '',
]);

/** Real CMS EnvelopedData (`openssl cms -encrypt -aes256` to a throw-away certificate). */
export const smimeMessage = crlf([
  'From: sender@example.net',
  'To: alice@example.test',
  'MIME-Version: 1.0',
  'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m',
  'Content-Transfer-Encoding: base64',
  '',
  'MIIByQYJKoZIhvcNAQcDoIIBujCCAbYCAQAxggFRMIIBTQIBADA1MB0xGzAZBgNV',
  'BAMMEmFsaWNlQGV4YW1wbGUudGVzdAIUCbNYBBpL1Hn3XKX3AgoWWtKFqH4wDQYJ',
  'KoZIhvcNAQEBBQAEggEA0uzNKk0L7lhALlqvxONes/v2shjooTVla0dKH5BclInx',
  'l3tRSSIrWuZlebRbMPgp+2yI7lY9aWXgXMEYyWdJ6PDmu60dK1UBG5HfOh8VsUY9',
  'y6KoIii1/5Y24+9P2pjnzJFb67V4hsAqrVPps6YF4+4iJTYpMFG42O320np8tTSP',
  'UYUQjiOqg0XFuNYZkm7X/O0+3S/uNheawPd/1RJLOvdnhiCDHCaAO2SMxwStSlvS',
  'vmkXmH+Dqb2G6R+FtqZb+ZeSz9eRUbQ1HiG3HU9WgPT94rbrdltcOVdVdb5lSDQ8',
  '3ReyHHxM4sWPrc8fOoSA2ejcI+UzZb7MYc5arxXk1jBcBgkqhkiG9w0BBwEwHQYJ',
  'YIZIAWUDBAEqBBAn6lazvg880f7vxhpVt2LHgDCczXrVV4mDAMN0i5In54hl9eBO',
  'hL8MG+OhyDFZKpz2I6SaG/c8RooE3HlqfyYe+ZY=',
  '',
]);

/** The part of a message that PGP/MIME encrypts: Content-* lines as received, the separator, the body. */
export function contentEntity(raw: Buffer): Buffer {
  const { headerLines, separator, body } = splitRaw(raw);
  const content = headerLines.filter((field) => /^content-/i.test(field.toString('latin1')));
  return Buffer.concat([...content, separator, body]);
}

/** The outer header lines a PGP/MIME copy must keep byte for byte. */
export function nonContentHeaderLines(raw: Buffer): Buffer[] {
  return splitRaw(raw).headerLines.filter((field) => !/^content-/i.test(field.toString('latin1')));
}

/** An independent (line-based, simple) reading of a raw message used to check the production splitter. */
export function splitRaw(raw: Buffer): { headerLines: Buffer[]; separator: Buffer; body: Buffer } {
  const fields: Buffer[] = [];
  let pos = 0;
  while (pos < raw.length) {
    const lf = raw.indexOf(0x0a, pos);
    const end = lf === -1 ? raw.length : lf + 1;
    const line = raw.subarray(pos, end);
    const text = line.toString('latin1');
    if (text === '\r\n' || text === '\n') return { headerLines: fields, separator: line, body: raw.subarray(end) };
    if (/^[ \t]/.test(text) && fields.length > 0) fields[fields.length - 1] = Buffer.concat([fields[fields.length - 1]!, line]);
    else if (/^[\x21-\x39\x3b-\x7e]+[ \t]*:/.test(text)) fields.push(line);
    else return { headerLines: fields, separator: Buffer.alloc(0), body: raw.subarray(pos) };
    pos = end;
  }
  return { headerLines: fields, separator: Buffer.alloc(0), body: Buffer.alloc(0) };
}

/** The first armored PGP message block in a copy. */
export function armoredBlock(message: Buffer): Buffer {
  const text = message.toString('latin1');
  const start = text.indexOf('-----BEGIN PGP MESSAGE-----');
  const endMarker = '-----END PGP MESSAGE-----';
  const end = text.indexOf(endMarker, start);
  if (start === -1 || end === -1) throw new Error('no armored PGP message in the copy');
  return message.subarray(start, end + endMarker.length);
}
