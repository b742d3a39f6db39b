/** Messages split as the pipeline splits them, for the tests of src/mime. */
import type { HeaderField, SplitMessage } from '../../src/mime/header.js';
import { splitMessage } from '../../src/mime/split.js';

export async function* once(raw: Buffer): AsyncGenerator<Buffer> {
  yield raw;
}

/** The message split from one chunk; text is taken as latin1, so that 8-bit bytes stay one to one. */
export function splitWhole(raw: Buffer | string, maxHeaderSize = 64 * 1024): Promise<SplitMessage> {
  return splitMessage(once(Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'latin1')), maxHeaderSize);
}

/** The fields of a header block whose lines end in CRLF; the blank line that ends it is added here. */
export async function fieldsOf(header: string): Promise<HeaderField[]> {
  return (await splitWhole(`${header}\r\n`)).fields;
}
