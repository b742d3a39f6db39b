import libmime from 'libmime';
import type { ContentType } from './inspect.js';

/**
 * The body parts of a multipart body (RFC 2046 §5.1.1) as far as a window onto it reaches, for reading
 * (never for rewriting). Works on latin1 text so that offsets are byte offsets.
 */
export interface WindowedParts {
  readonly parts: BodyPart[];
  /** The close delimiter ("--boundary--") was read. */
  readonly closed: boolean;
}

export interface BodyPart {
  /** The part's header lines, unfolded later by contentTypeOfPart. */
  readonly header: string;
  /** The part's body, without the line ending that belongs to the next delimiter. */
  readonly body: string;
  /** The delimiter after this part was read (the part is whole). */
  readonly ended: boolean;
}

/** Splits `text` at the boundary's delimiter lines; the preamble and epilogue are left out. */
export function multipartParts(text: string, boundary: string): WindowedParts {
  const delimiter = `--${boundary}`;
  const parts: BodyPart[] = [];
  let partStart = -1;
  let offset = 0;
  while (offset < text.length) {
    const lf = text.indexOf('\n', offset);
    const lineEnd = lf === -1 ? text.length : lf + 1;
    const line = text.slice(offset, lineEnd).trimEnd();
    if (line === delimiter || line === `${delimiter}--`) {
      if (partStart !== -1) parts.push(bodyPart(text.slice(partStart, precedingLineEnd(text, offset)), true));
      if (line !== delimiter) return { parts, closed: true };
      partStart = lineEnd;
    }
    offset = lineEnd;
  }
  if (partStart !== -1) parts.push(bodyPart(text.slice(partStart), false));
  return { parts, closed: false };
}

/** Where the CRLF (or LF) before the delimiter line at `offset` begins: it belongs to the delimiter. */
function precedingLineEnd(text: string, offset: number): number {
  if (offset > 0 && text[offset - 1] === '\n') return offset >= 2 && text[offset - 2] === '\r' ? offset - 2 : offset - 1;
  return offset;
}

function bodyPart(text: string, ended: boolean): BodyPart {
  if (/^\r?\n/.test(text)) return { header: '', body: text.replace(/^\r?\n/, ''), ended };
  const blank = /\r?\n\r?\n/.exec(text);
  if (!blank) return { header: text, body: '', ended };
  return { header: text.slice(0, blank.index), body: text.slice(blank.index + blank[0].length), ended };
}

/** A part's Content-Type (text/plain when it has none, as RFC 2045 says). */
export function contentTypeOfPart(part: BodyPart): ContentType {
  const unfolded = part.header.replace(/\r?\n[ \t]/g, ' ');
  const field = /^content-type[ \t]*:(.*)$/im.exec(unfolded);
  if (!field) return { mediaType: 'text/plain', params: {} };
  const parsed = libmime.parseHeaderValue(field[1]!.trim());
  return { mediaType: parsed.value.toLowerCase().trim() || 'text/plain', params: {} };
}
