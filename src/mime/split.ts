import { MessageRejectedError } from '../errors.js';
import { classifyLine, detectEol, fieldName, partialLineKind, type HeaderField, type SplitMessage } from './header.js';

const LF = 0x0a;

/**
 * Reads chunks until the header block ends (a blank line, or the first line that cannot be a header field),
 * holding at most maxHeaderSize bytes. The rest of the body stays in `chunks` for the caller to stream.
 */
export async function splitMessage(chunks: AsyncIterator<Buffer>, maxHeaderSize: number): Promise<SplitMessage> {
  const scanner = new HeaderScanner();
  const tooLarge = () => new MessageRejectedError(`message header block exceeds ${maxHeaderSize} bytes (smtp.max_header_size)`, '5.3.4');
  for (;;) {
    const result = scanner.scan();
    if (result && result.headerBlock.length > maxHeaderSize) throw tooLarge();
    if (result) return result;
    if (scanner.headerBytes > maxHeaderSize) throw tooLarge();
    const next = await chunks.next();
    if (next.done) return scanner.finish();
    scanner.push(next.value);
  }
}

class HeaderScanner {
  private buffer: Buffer = Buffer.alloc(0);
  private lineStart = 0;
  private fieldStart = -1;
  private readonly fields: HeaderField[] = [];

  /**
   * Bytes read that are the header block. The unfinished last line counts once it is known to be a field (or a
   * continuation): until then (a lone CR, a name still waiting for its colon) it may yet be the separator or a
   * body line, so the limit is applied alike however the input is cut.
   */
  get headerBytes(): number {
    return partialLineKind(this.unfinishedLine(), this.fieldStart !== -1) === undefined ? this.lineStart : this.buffer.length;
  }

  private unfinishedLine(): Buffer {
    return this.buffer.subarray(this.lineStart);
  }

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
  }

  /** Classifies every complete line; returns the split once the header block has ended. */
  scan(): SplitMessage | undefined {
    for (;;) {
      const lf = this.buffer.indexOf(LF, this.lineStart);
      // A body line ends the header block as soon as it is recognised, before its end arrives.
      if (lf === -1) return partialLineKind(this.unfinishedLine(), this.fieldStart !== -1) === 'body' ? this.done(Buffer.alloc(0), this.unfinishedLine()) : undefined;
      const line = this.buffer.subarray(this.lineStart, lf + 1);
      const kind = classifyLine(line, this.fieldStart !== -1);
      if (kind === 'blank') return this.done(line, this.buffer.subarray(lf + 1));
      if (kind === 'body') return this.done(Buffer.alloc(0), this.buffer.subarray(this.lineStart));
      if (kind === 'field') this.startField();
      this.lineStart = lf + 1;
    }
  }

  /** The input ended inside the header block (header-only message, or no final newline). */
  finish(): SplitMessage {
    const rest = this.buffer.subarray(this.lineStart);
    if (rest.length === 0) return this.done(Buffer.alloc(0), rest);
    const kind = classifyLine(rest, this.fieldStart !== -1);
    if (kind === 'field') this.startField();
    if (kind === 'field' || kind === 'continuation') {
      this.lineStart = this.buffer.length;
      return this.done(Buffer.alloc(0), Buffer.alloc(0));
    }
    return this.done(Buffer.alloc(0), rest);
  }

  private startField(): void {
    this.closeField();
    this.fieldStart = this.lineStart;
  }

  private closeField(): void {
    if (this.fieldStart === -1) return;
    const raw = this.buffer.subarray(this.fieldStart, this.lineStart);
    const name = fieldName(raw);
    this.fields.push({ name, lowerName: name.toLowerCase(), raw });
  }

  private done(separator: Buffer, bodyStart: Buffer): SplitMessage {
    this.closeField();
    this.fieldStart = -1;
    const headerBlock = this.buffer.subarray(0, this.buffer.length - bodyStart.length - separator.length);
    // From the header block and separator only: the body may not have been read to its first line end.
    const eol = detectEol(this.buffer.subarray(0, headerBlock.length + separator.length));
    return { headerBlock, fields: this.fields, separator, bodyStart, eol };
  }
}
