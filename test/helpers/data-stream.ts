/** Runs a DATA escaping body through nodemailer's DataStream, for the tests of src/delivery/dot-stuffing.ts. */
import DataStream from 'nodemailer/lib/smtp-connection/data-stream.js';
import type { originalTransform } from '../../src/delivery/dot-stuffing.js';

export type EscapingBody = typeof originalTransform;

/** Runs `body` as DataStream's _transform over `chunks` (then its own _flush): output and counters. */
export async function escape(body: EscapingBody, chunks: Array<Buffer | string>): Promise<{ out: Buffer; inBytes: number; outBytes: number }> {
  const stream = new DataStream();
  stream._transform = body;
  const out: Buffer[] = [];
  stream.on('data', (piece: Buffer) => out.push(piece));
  const ended = new Promise((resolve) => stream.on('end', resolve));
  for (const chunk of chunks) stream.write(chunk);
  stream.end();
  await ended;
  return { out: Buffer.concat(out), inBytes: stream.inByteCount, outBytes: stream.outByteCount };
}
