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

const ARMOR_BEGIN = '-----BEGIN PGP MESSAGE-----';
/** How many body bytes are needed to recognise an inline PGP message (leading white space included). */
export const INLINE_PEEK_BYTES = 8 * 1024;

/**
 * Why a message must be passed through untouched, or undefined if it is not encrypted yet.
 * S/MIME signed-only (smime-type=signed-data / certs-only) is not encrypted and gets encrypted like any other message.
 */
export function alreadyEncryptedReason(type: ContentType, bodyStart: Buffer): string | undefined {
  switch (type.mediaType) {
    case 'multipart/encrypted':
      return `multipart/encrypted (${type.params.protocol ?? 'no protocol'})`;
    case 'application/pgp-encrypted':
      return 'application/pgp-encrypted';
    case 'application/pkcs7-mime':
    case 'application/x-pkcs7-mime': {
      const smimeType = (type.params['smime-type'] ?? '').toLowerCase();
      if (smimeType === 'signed-data' || smimeType === 'certs-only') return undefined;
      return `S/MIME ${type.mediaType}`;
    }
  }
  if (type.mediaType === 'text/plain' && startsWithArmor(bodyStart)) return 'inline PGP';
  return undefined;
}

/** The body (leading white space skipped) opens with an armored PGP message. */
function startsWithArmor(bodyStart: Buffer): boolean {
  const text = bodyStart.subarray(0, INLINE_PEEK_BYTES).toString('latin1');
  return text.trimStart().startsWith(ARMOR_BEGIN);
}

/** Inline PGP only suits a single text/plain part; anything else falls back to PGP/MIME. */
export function inlineEligible(type: ContentType): boolean {
  return type.mediaType === 'text/plain';
}

export function messageIdOf(fields: readonly HeaderField[]): string | undefined {
  const field = findField(fields, 'message-id');
  return field ? fieldValue(field).slice(0, 250) : undefined;
}
