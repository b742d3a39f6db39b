import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

export const SENDER = 'bench@sender.example';

/** Fixed-width field in the template that each message overwrites with its number (keeps Message-IDs unique). */
const COUNTER = '0000000000';

/**
 * Makes `size`-byte messages (headers included, CRLF, no line starting with a dot) that differ only in their
 * queue id, Message-ID and Subject counter, so building one costs a buffer copy.
 */
export function messageFactory(to: readonly string[], size: number): (index: number) => Buffer {
  // Postfix's Received field with a queue id, as every message a content filter gets: the delivery ledger works on
  // it. Unique per factory too: each load numbers its messages from 0, and a repeated message would be skipped.
  const factory = randomBytes(4).toString('hex').toUpperCase();
  const header =
    `Received: from client.bench.example (localhost [127.0.0.1])\r\n\tby mx.bench.example (Postfix) with ESMTP id B${factory}${COUNTER}\r\n\tfor <${to[0] ?? ''}>; ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
    `From: Bench <${SENDER}>\r\n` +
    `To: ${to.map((address) => `<${address}>`).join(',\r\n ')}\r\n` +
    `Subject: bench message ${COUNTER}\r\n` +
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
    `Message-ID: <${COUNTER}.bench@sender.example>\r\n` +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: text/plain; charset=us-ascii\r\n' +
    'Content-Transfer-Encoding: 7bit\r\n' +
    '\r\n';
  const template = Buffer.from(header + textBody(size - header.length), 'latin1');
  if (template.length !== size) throw new Error(`message template is ${template.length} bytes, wanted ${size}`);
  const offsets: number[] = [];
  for (let at = template.indexOf(COUNTER); at >= 0; at = template.indexOf(COUNTER, at + 1)) offsets.push(at);
  return (index) => {
    const message = Buffer.from(template);
    const digits = String(index).padStart(COUNTER.length, '0');
    for (const offset of offsets) message.write(digits, offset, 'latin1');
    return message;
  };
}

/** `size` bytes (at least 82) of CRLF-terminated text lines; the last line is adjusted so the total is exact. */
function textBody(size: number): string {
  const line = 'The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n';
  const lines = Math.floor(size / line.length) - 1;
  const last = size - lines * line.length; // between line.length and 2 * line.length - 1
  return line.repeat(lines) + 'x'.repeat(last - 2) + '\r\n';
}

/**
 * A message of exactly `size` bytes, produced chunk by chunk on demand (never held whole): a header block
 * and base64-looking 76-character lines, as a large attachment would be.
 */
export function bigMessageStream(to: string, size: number): Readable {
  const header = Buffer.from(
    `From: Bench <${SENDER}>\r\nTo: <${to}>\r\nSubject: big bench message\r\nMessage-ID: <big.bench@sender.example>\r\n` +
      'MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n',
    'latin1',
  );
  const line = 'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n';
  const chunk = Buffer.from(line.repeat(Math.floor((256 * 1024) / line.length)), 'latin1');
  let remaining = size - header.length;
  if (remaining < line.length) throw new Error(`big message size ${size} is too small`);
  let sentHeader = false;
  return new Readable({
    highWaterMark: chunk.length,
    read() {
      if (!sentHeader) {
        sentHeader = true;
        this.push(header);
        return;
      }
      if (remaining === 0) return void this.push(null);
      if (remaining >= chunk.length + line.length || remaining === chunk.length) {
        remaining -= chunk.length;
        this.push(chunk);
        return;
      }
      // The tail: whole lines, then one short line so the total is exact and still ends in CRLF.
      const wholeLines = Math.floor((remaining - 2) / line.length);
      const tail = line.repeat(wholeLines) + 'A'.repeat(remaining - wholeLines * line.length - 2) + '\r\n';
      remaining = 0;
      this.push(Buffer.from(tail, 'latin1'));
    },
  });
}
