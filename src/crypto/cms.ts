/**
 * Just enough BER/DER (X.690) to tell whether bytes are a CMS ContentInfo (RFC 5652 §3) carrying
 * EnvelopedData or AuthEnvelopedData (RFC 5083): the S/MIME forms that are encrypted. Reading only, from
 * the first bytes; never throws.
 */

const SEQUENCE = 0x30;
const OBJECT_IDENTIFIER = 0x06;
const INTEGER = 0x02;
/** [0] EXPLICIT, constructed: ContentInfo's content. */
const CONTENT_0 = 0xa0;

/** 1.2.840.113549.1.7.3 (id-envelopedData) and 1.2.840.113549.1.9.16.1.23 (id-ct-authEnvelopedData), DER-encoded. */
const ENCRYPTED_CONTENT_TYPES = [
  Buffer.from([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03]),
  Buffer.from([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17]),
];

export interface Tlv {
  readonly tag: number;
  readonly contentOffset: number;
  /** Content length; undefined for BER's indefinite length (the content ends with two zero octets). */
  readonly length: number | undefined;
}

/** The tag-length header at `offset`, or undefined when cut short or not one this reader accepts. */
export function readTlv(bytes: Uint8Array, offset: number): Tlv | undefined {
  const tag = bytes[offset];
  const first = bytes[offset + 1];
  // High tag numbers (0x1f) never occur in the headers read here.
  if (tag === undefined || first === undefined || (tag & 0x1f) === 0x1f) return undefined;
  if (first < 0x80) return { tag, contentOffset: offset + 2, length: first };
  const octets = first & 0x7f;
  if (octets === 0) return tag & 0x20 ? { tag, contentOffset: offset + 2, length: undefined } : undefined;
  if (octets > 4 || offset + 2 + octets > bytes.length) return undefined;
  let length = 0;
  for (let i = 0; i < octets; i++) length = length * 256 + bytes[offset + 2 + i]!;
  return { tag, contentOffset: offset + 2 + octets, length };
}

/**
 * Whether `bytes` open with ContentInfo { contentType EnvelopedData | AuthEnvelopedData, [0] { SEQUENCE {
 * version INTEGER … } } }. `complete` says the bytes are the whole body: a definite outer length must then
 * match it exactly.
 */
export function isEnvelopedCms(bytes: Uint8Array, complete: boolean): boolean {
  const contentInfo = readTlv(bytes, 0);
  if (contentInfo?.tag !== SEQUENCE) return false;
  if (complete && contentInfo.length !== undefined && contentInfo.contentOffset + contentInfo.length !== bytes.length) return false;
  const contentType = readTlv(bytes, contentInfo.contentOffset);
  if (contentType?.tag !== OBJECT_IDENTIFIER || contentType.length === undefined) return false;
  const oidEnd = contentType.contentOffset + contentType.length;
  if (oidEnd > bytes.length || !inside(contentType, contentInfo)) return false;
  const oid = bytes.subarray(contentType.contentOffset, oidEnd);
  if (!ENCRYPTED_CONTENT_TYPES.some((known) => known.equals(oid))) return false;
  const content = readTlv(bytes, oidEnd);
  if (content?.tag !== CONTENT_0 || !inside(content, contentInfo)) return false;
  const enveloped = readTlv(bytes, content.contentOffset);
  if (enveloped?.tag !== SEQUENCE || !inside(enveloped, content)) return false;
  const version = readTlv(bytes, enveloped.contentOffset);
  if (version?.tag !== INTEGER || version.length !== 1 || !inside(version, enveloped)) return false;
  const value = bytes[version.contentOffset];
  return value !== undefined && value <= 4;
}

/** A definite-length child ends within its definite-length parent. */
function inside(child: Tlv, parent: Tlv): boolean {
  if (parent.length === undefined) return true;
  const parentEnd = parent.contentOffset + parent.length;
  return child.contentOffset <= parentEnd && (child.length === undefined || child.contentOffset + child.length <= parentEnd);
}
