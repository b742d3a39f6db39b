import libmime from 'libmime';
import { fieldValue, findField, type HeaderField } from './header.js';

export interface ContentType {
  /** Lower-cased "type/subtype"; "text/plain" when the header is absent (RFC 2045 default). */
  readonly mediaType: string;
  readonly params: Record<string, string>;
}

export function contentTypeOf(fields: readonly HeaderField[]): ContentType {
  const field = findField(fields, 'content-type');
  if (!field) return { mediaType: 'text/plain', params: {} };
  const parsed = libmime.parseHeaderValue(fieldValue(field));
  const params: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed.params)) params[key.toLowerCase()] = String(value);
  return { mediaType: parsed.value.toLowerCase().trim() || 'text/plain', params };
}

export function transferEncodingOf(fields: readonly HeaderField[]): string {
  const field = findField(fields, 'content-transfer-encoding');
  return field ? fieldValue(field).toLowerCase() : '7bit';
}

/** How many body bytes are read to see past leading white space to what the body opens with. */
export const INLINE_PEEK_BYTES = 8 * 1024;

/** Inline PGP only suits a single text/plain part; anything else falls back to PGP/MIME. */
export function inlineEligible(type: ContentType): boolean {
  return type.mediaType === 'text/plain';
}

export function messageIdOf(fields: readonly HeaderField[]): string | undefined {
  const field = findField(fields, 'message-id');
  return field ? fieldValue(field).slice(0, 250) : undefined;
}
