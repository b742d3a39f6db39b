import libbase64 from 'libbase64';
import { isEnvelopedCms } from '../crypto/cms.js';
import { dearmor } from '../crypto/dearmor.js';
import { isEncryptedOpenPgp } from '../crypto/packet-reader.js';
import { INLINE_PEEK_BYTES, type ContentType } from '../mime/inspect.js';
import { contentTypeOfPart, multipartParts } from '../mime/parts.js';

/**
 * How much of the body the check reads at most. Session-key packets come before the encrypted data: 100
 * PKESK packets for RSA-4096 keys take about 52 KiB of binary, 70 KiB of armor, so 128 KiB reads a message to
 * a hundred such recipients. A message whose encrypted data starts beyond it is encrypted again (safe).
 */
export const ENCRYPTED_PEEK_BYTES = 128 * 1024;

const ARMOR_BEGIN = '-----BEGIN PGP MESSAGE-----';

export interface BodyWindow {
  /** The body's first bytes (at most ENCRYPTED_PEEK_BYTES are read). */
  readonly bytes: Buffer;
  /** `bytes` hold the whole body. */
  readonly complete: boolean;
}

/** Whether the body must be read up to ENCRYPTED_PEEK_BYTES (or its end) before deciding. */
export function needsLongerLook(type: ContentType, bodyStart: Buffer): boolean {
  switch (type.mediaType) {
    case 'multipart/encrypted':
    case 'application/pgp-encrypted':
    case 'application/pkcs7-mime':
    case 'application/x-pkcs7-mime':
      return true;
    case 'text/plain':
      return opensInlineBlock(bodyStart);
    default:
      return false;
  }
}

/**
 * Why a message must be passed through untouched, or undefined if it is to be encrypted. Only what is
 * encrypted in its structure passes, whatever its header says (README, "Outcomes for unusual input"):
 * - PGP/MIME: multipart/encrypted; protocol="application/pgp-encrypted" whose first part is
 *   application/pgp-encrypted holding "Version: 1" and whose second part is one armored encrypted OpenPGP
 *   message (session-key packets, then the encrypted data) and nothing else, and no third part;
 * - inline PGP (a text/plain body) and a top-level application/pgp-encrypted: the body is such an armored
 *   message, white space around it only;
 * - S/MIME application/(x-)pkcs7-mime: the body is CMS EnvelopedData or AuthEnvelopedData.
 * What lies beyond the window is not read; a window that ends before the structure could be seen means
 * "not encrypted".
 */
export function alreadyEncryptedReason(type: ContentType, transferEncoding: string, body: BodyWindow): string | undefined {
  const window = body.bytes.subarray(0, ENCRYPTED_PEEK_BYTES);
  const complete = body.complete && body.bytes.length <= ENCRYPTED_PEEK_BYTES;
  switch (type.mediaType) {
    case 'multipart/encrypted':
      return isPgpMime(type, window.toString('latin1'), complete) ? 'PGP/MIME' : undefined;
    case 'application/pgp-encrypted':
      return isArmoredEncrypted(window.toString('latin1'), complete) ? 'application/pgp-encrypted' : undefined;
    case 'application/pkcs7-mime':
    case 'application/x-pkcs7-mime':
      return isSmimeEnveloped(window, transferEncoding, complete) ? `S/MIME ${type.mediaType}` : undefined;
    case 'text/plain':
      return opensInlineBlock(window) && isArmoredEncrypted(window.toString('latin1'), complete) ? 'inline PGP' : undefined;
    default:
      return undefined;
  }
}

/**
 * An inline block must open within the body's first INLINE_PEEK_BYTES (white space before it): that is all the
 * pipeline reads before deciding to look further, and more may have been read, depending on how the input was cut.
 */
function opensInlineBlock(body: Buffer): boolean {
  return opensWithArmor(body.subarray(0, INLINE_PEEK_BYTES).toString('latin1'));
}

function opensWithArmor(text: string): boolean {
  return text.trimStart().startsWith(ARMOR_BEGIN);
}

/**
 * RFC 3156 §4: exactly two parts. The second may run past the window (then what was read of it must be
 * armor); the preamble and epilogue are not read (RFC 2046: to be ignored; clients put a note there).
 */
function isPgpMime(type: ContentType, text: string, complete: boolean): boolean {
  const boundary = type.params.boundary;
  if ((type.params.protocol ?? '').toLowerCase() !== 'application/pgp-encrypted' || !boundary) return false;
  const { parts, closed } = multipartParts(text, boundary);
  const [control, encrypted] = parts;
  if (!control?.ended || !encrypted || parts.length > 2 || (complete && !closed)) return false;
  if (contentTypeOfPart(control).mediaType !== 'application/pgp-encrypted' || !holdsVersionOne(control.body)) return false;
  return isArmoredEncrypted(encrypted.body, encrypted.ended);
}

/** The control part: "Version: 1", white space around it. */
function holdsVersionOne(body: string): boolean {
  return /^\s*Version:[ \t]*1[ \t]*(\r?\n\s*)?$/.test(body);
}

/**
 * `text` (leading white space skipped) is one armored encrypted OpenPGP message and, when the armor ended
 * within it, nothing but white space follows. With `complete`, the armor must end within it.
 */
function isArmoredEncrypted(text: string, complete: boolean): boolean {
  if (!opensWithArmor(text)) return false;
  const armor = dearmor(text.trimStart(), complete);
  if (!armor || (complete && !armor.complete) || armor.after.trim() !== '') return false;
  return isEncryptedOpenPgp(armor.bytes, armor.complete);
}

function isSmimeEnveloped(window: Buffer, transferEncoding: string, complete: boolean): boolean {
  if (transferEncoding !== 'base64') return isEnvelopedCms(window, complete);
  const base64 = window.toString('latin1').replace(/[\s]+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(base64)) return false;
  const whole = complete ? base64 : base64.slice(0, base64.length - (base64.length % 4));
  return isEnvelopedCms(libbase64.decode(whole), complete);
}
