/**
 * Reads an ASCII-armored PGP message (RFC 9580 §6.2) strictly: the BEGIN line, armor header lines
 * ("Version: …"), a blank line, base64 lines, an optional CRC-24 line, the END line. Used to recognise
 * mail that is already encrypted, so anything else in between makes it "not armor". Never throws.
 */

const BEGIN = '-----BEGIN PGP MESSAGE-----';
const END = '-----END PGP MESSAGE-----';
const ARMOR_HEADER = /^[\x21-\x39\x3b-\x7e]+: ?[^\r\n]*$/;
const BASE64_LINE = /^[A-Za-z0-9+/]+={0,2}$/;
const CRC_LINE = /^=[A-Za-z0-9+/]{4}$/;

export interface Dearmored {
  /** The decoded bytes: the whole message when `complete`, else those of the base64 lines read. */
  readonly bytes: Buffer;
  /** The END line was read. */
  readonly complete: boolean;
  /** The text after the END line (empty when not complete). */
  readonly after: string;
}

/**
 * The armored message `text` opens with (its first line is the BEGIN line), or undefined when it is not one.
 * `textComplete` false means `text` is a window onto a longer text: its last, possibly cut, line is not read.
 */
export function dearmor(text: string, textComplete: boolean): Dearmored | undefined {
  const lines = new LineReader(text, textComplete);
  if (lines.next()?.trimEnd() !== BEGIN) return undefined;
  let line = lines.next();
  while (line !== undefined && ARMOR_HEADER.test(line.trimEnd())) line = lines.next();
  if (line === undefined) return { bytes: Buffer.alloc(0), complete: false, after: '' };
  if (line.trim() !== '') return undefined;
  const base64: string[] = [];
  let padded = false;
  for (line = lines.next(); line !== undefined; line = lines.next()) {
    const content = line.trimEnd();
    if (content.startsWith(END)) return content === END ? finished(base64, lines.rest()) : undefined;
    if (CRC_LINE.test(content)) {
      const end = lines.next()?.trimEnd();
      if (end === undefined) break;
      return end === END ? finished(base64, lines.rest()) : undefined;
    }
    if (padded || !BASE64_LINE.test(content)) return undefined;
    padded = content.endsWith('=');
    base64.push(content);
  }
  const joined = base64.join('');
  return { bytes: Buffer.from(joined.slice(0, joined.length - (joined.length % 4)), 'base64'), complete: false, after: '' };
}

function finished(base64: string[], after: string): Dearmored | undefined {
  const joined = base64.join('');
  // Unpadded base64 is tolerated (GnuPG and Lacre's own armor accept it); a lone sixth bit-group is not base64.
  if (joined.length % 4 === 1) return undefined;
  return { bytes: Buffer.from(joined, 'base64'), complete: true, after };
}

/** Lines of a text, each without its line ending; a window's last (unterminated) line is withheld. */
class LineReader {
  private offset = 0;
  constructor(
    private readonly text: string,
    private readonly textComplete: boolean,
  ) {}

  next(): string | undefined {
    if (this.offset >= this.text.length) return undefined;
    const lf = this.text.indexOf('\n', this.offset);
    if (lf === -1 && !this.textComplete) return undefined;
    const end = lf === -1 ? this.text.length : lf;
    const line = this.text.slice(this.offset, end).replace(/\r$/, '');
    this.offset = end + 1;
    return line;
  }

  rest(): string {
    return this.text.slice(this.offset);
  }
}
