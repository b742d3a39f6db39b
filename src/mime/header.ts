/**
 * Byte-exact reading of a message's header block. Nothing here rewrites a byte: each field keeps its raw
 * bytes (folded continuation lines and line endings included) so the outer message can be re-emitted as received.
 */

export interface HeaderField {
  /** Field name as written, e.g. "Content-Type". */
  readonly name: string;
  readonly lowerName: string;
  /** The field's bytes exactly as received, continuation lines and final line ending included. */
  readonly raw: Buffer;
}

export interface SplitMessage {
  /** Every byte before the separator, exactly as received. */
  readonly headerBlock: Buffer;
  readonly fields: HeaderField[];
  /** The line that ended the header block ("\r\n" or "\n"), or empty when there was none. */
  readonly separator: Buffer;
  /** Bytes of the body that were read while looking for the end of the header block. */
  readonly bodyStart: Buffer;
  /** Line ending the header block uses (CRLF when it has none), to write our own lines the same way. */
  readonly eol: '\r\n' | '\n';
}

const LF = 0x0a;
const CR = 0x0d;
/** field-name = 1*ftext, ftext = %d33-57 / %d59-126; obsolete syntax allows white space before the colon. */
const FIELD_START = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/;

export type LineKind = 'blank' | 'continuation' | 'field' | 'body';

export function classifyLine(line: Buffer, haveField: boolean): LineKind {
  if (line.length === 0 || line[0] === LF || (line[0] === CR && line[1] === LF && line.length === 2)) return 'blank';
  if ((line[0] === 0x20 || line[0] === 0x09) && haveField) return 'continuation';
  // Only the start of a line is needed to recognise a field name; latin1 keeps 8-bit bytes one-to-one.
  return FIELD_START.test(line.subarray(0, 1000).toString('latin1')) ? 'field' : 'body';
}

/** An unfinished line that could still turn out to be a field once its colon arrives. */
const MAY_BECOME_FIELD = /^[\x21-\x39\x3b-\x7e]+[ \t]*$/;

/**
 * What a line whose end has not arrived yet already is, or undefined while more bytes could change it (a lone
 * CR, a field name without its colon). classifyLine reads at most 1000 bytes, so from then on it is decided.
 */
export function partialLineKind(line: Buffer, haveField: boolean): LineKind | undefined {
  if (line.length === 0 || (line.length === 1 && line[0] === CR)) return undefined;
  const kind = classifyLine(line, haveField);
  if (kind !== 'body' || line.length >= 1000) return kind;
  return MAY_BECOME_FIELD.test(line.toString('latin1')) ? undefined : 'body';
}

export function fieldName(line: Buffer): string {
  const text = line.subarray(0, 1000).toString('latin1');
  return text.slice(0, text.indexOf(':')).trimEnd();
}

export function detectEol(buffer: Buffer): '\r\n' | '\n' {
  const lf = buffer.indexOf(LF);
  if (lf === -1) return '\r\n';
  return lf > 0 && buffer[lf - 1] === CR ? '\r\n' : '\n';
}

/** Unfolds a field's value for reading (never for writing back). */
export function fieldValue(field: HeaderField): string {
  const text = field.raw.toString('latin1');
  return text.slice(text.indexOf(':') + 1).replace(/\r?\n[ \t]/g, ' ').replace(/\r?\n$/, '').trim();
}

export function findField(fields: readonly HeaderField[], lowerName: string): HeaderField | undefined {
  return fields.find((field) => field.lowerName === lowerName);
}

export function isContentField(field: HeaderField): boolean {
  return field.lowerName.startsWith('content-');
}
