/**
 * The Web Key Service's messages (draft-koch-openpgp-webkey-service, as GnuPG 2.2's gpg-wks-client and
 * gpg-wks-server speak it; docs/wkd-wks.md): reading what arrives at the submission address (a key
 * submission, a confirmation response) and writing the confirmation request. No I/O: bytes in, bytes out.
 */
import { randomBytes } from 'node:crypto';
import libqp from 'libqp';
import { createMessage, decrypt, encrypt, enums, readMessage, readSignature, sign, type PrivateKey, type PublicKey } from 'openpgp';
import { LacreError } from '../errors.js';
import { contentTypeOf, transferEncodingOf, type ContentType } from '../mime/inspect.js';
import { multipartParts } from '../mime/parts.js';
import { splitMessage } from '../mime/split.js';

export const WKS_MEDIA_TYPE = 'application/vnd.gnupg.wks';
/** The draft version GnuPG 2.2 writes and expects (Wks-Draft-Version). */
export const WKS_DRAFT_VERSION = '3';

/** What arrived is not a WKS message Lacre can act on; `reason` is safe to log (no content, no nonce). */
export class WksMessageError extends LacreError {}

export interface ConfirmationRequest {
  readonly sender: string;
  readonly address: string;
  readonly fingerprint: string;
  readonly nonce: string;
}

export type WksMessage =
  | { readonly kind: 'submission'; readonly key: string }
  | { readonly kind: 'confirmation-response'; readonly sender: string | undefined; readonly address: string; readonly nonce: string };

interface Entity {
  readonly type: ContentType;
  readonly transferEncoding: string;
  /** The body as latin1 text, so that offsets are byte offsets. */
  readonly body: string;
}

const MAX_HEADER_BYTES = 64 * 1024;
/** Nested multiparts read at most this deep: a submission is two levels at most. */
const MAX_DEPTH = 4;

/** The confirmation request's fields, as gpg-wks-server writes them: LF line ends, no blank line after the last. */
export function confirmationRequestText(request: ConfirmationRequest): string {
  return [
    'type: confirmation-request',
    `sender: ${request.sender}`,
    `address: ${request.address}`,
    `fingerprint: ${request.fingerprint}`,
    `nonce: ${request.nonce}`,
  ].join('\n');
}

/**
 * "name: value" lines as GnuPG's name-value parser reads them: names compared case-insensitively, '#' comments,
 * a line starting with white space continues the previous value, values trimmed (gpg-wks-server trims the nonce too).
 */
export function parseWksFields(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith('#')) continue;
    if (/^[ \t]/.test(line) || line === '') {
      if (last !== undefined && line.trim() !== '') fields.set(last, `${fields.get(last)!} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new WksMessageError('a line of the WKS data is not "name: value"');
    last = line.slice(0, colon).trim().toLowerCase();
    if (!fields.has(last)) fields.set(last, line.slice(colon + 1).trim());
  }
  return fields;
}

/**
 * Reads a mail sent to the submission address: PGP/MIME encrypted to the submission key (what gpg-wks-client sends),
 * or in the clear (its fallback when it has no key for the server; the nonce still proves the key). Throws
 * WksMessageError for anything else.
 */
export async function readWksMail(mail: Buffer, submissionKey: PrivateKey): Promise<WksMessage> {
  const entity = await readEntity(mail);
  const content = entity.type.mediaType === 'multipart/encrypted' ? await readEntity(await decryptPgpMime(entity, submissionKey)) : entity;
  return readContent(content);
}

async function readContent(entity: Entity): Promise<WksMessage> {
  switch (entity.type.mediaType) {
    case 'application/pgp-keys': {
      const key = decodedBody(entity).toString('utf8');
      if (!key.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')) throw new WksMessageError('the application/pgp-keys part holds no armored public key');
      return { kind: 'submission', key };
    }
    case WKS_MEDIA_TYPE:
      return confirmationResponse(parseWksFields(decodedBody(entity).toString('utf8')));
    default:
      throw new WksMessageError(`a ${entity.type.mediaType} message is neither a key submission nor a confirmation response`);
  }
}

function confirmationResponse(fields: Map<string, string>): WksMessage {
  if (fields.get('type') !== 'confirmation-response') throw new WksMessageError('the WKS data is not a confirmation response');
  const address = fields.get('address');
  const nonce = fields.get('nonce');
  if (!address || !address.includes('@')) throw new WksMessageError('the confirmation response names no address');
  // gpg-wks-client and -server both refuse a nonce of 16 characters or fewer.
  if (!nonce || nonce.length <= 16 || nonce.length > 256) throw new WksMessageError('the confirmation response has no usable nonce');
  return { kind: 'confirmation-response', sender: fields.get('sender'), address, nonce };
}

/** RFC 3156: the second part of multipart/encrypted holds the armored message. */
async function decryptPgpMime(entity: Entity, submissionKey: PrivateKey): Promise<Buffer> {
  const parts = bodyParts(entity);
  const armored = parts[1]?.body;
  if (parts.length !== 2 || armored === undefined || !armored.includes('-----BEGIN PGP MESSAGE-----')) {
    throw new WksMessageError('multipart/encrypted without the two parts of PGP/MIME');
  }
  try {
    const { data } = await decrypt({ message: await readMessage({ armoredMessage: armored }), decryptionKeys: submissionKey, format: 'binary' });
    return Buffer.from(data);
  } catch (error) {
    throw new WksMessageError('the message could not be decrypted with the submission key', { cause: error });
  }
}

function bodyParts(entity: Entity): { header: string; body: string }[] {
  const boundary = entity.type.params.boundary;
  if (!boundary) throw new WksMessageError(`${entity.type.mediaType} without a boundary`);
  return multipartParts(entity.body, boundary).parts;
}

async function readEntity(bytes: Buffer | string, depth = 0): Promise<Entity> {
  if (depth > MAX_DEPTH) throw new WksMessageError('MIME nesting too deep');
  const buffer = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  const split = await splitMessage([buffer].values() as unknown as AsyncIterator<Buffer>, MAX_HEADER_BYTES).catch((error: unknown) => {
    throw new WksMessageError('unreadable header block', { cause: error });
  });
  const body = buffer.subarray(split.headerBlock.length + split.separator.length).toString('latin1');
  return { type: contentTypeOf(split.fields), transferEncoding: transferEncodingOf(split.fields), body };
}

function decodedBody(entity: Entity): Buffer {
  if (entity.transferEncoding === 'base64') return Buffer.from(entity.body.replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  if (entity.transferEncoding === 'quoted-printable') return libqp.decode(entity.body);
  return Buffer.from(entity.body, 'latin1');
}

export interface ConfirmationRequestParts {
  readonly request: ConfirmationRequest;
  /** The explanation for people (text/plain, in the user's language). */
  readonly explanation: string;
  /** The key being published: the WKS data is encrypted to it, so only its holder learns the nonce. */
  readonly targetKey: PublicKey;
  /** The submission key: signs the request (multipart/signed), as gpg-wks-server does. */
  readonly signingKey: PrivateKey;
}

/**
 * The confirmation request's MIME entity (Content-Type field, blank line, body), laid out as gpg-wks-server
 * writes it for draft 2 and later: multipart/signed over multipart/mixed (text/plain explanation +
 * application/vnd.gnupg.wks holding the fields encrypted to the target key), signed by the submission key.
 */
export async function confirmationRequestEntity(parts: ConfirmationRequestParts): Promise<Buffer> {
  const encrypted = await encrypt({
    message: await createMessage({ binary: Buffer.from(confirmationRequestText(parts.request), 'utf8') }),
    encryptionKeys: parts.targetKey,
    format: 'armored',
  });
  const mixedBoundary = boundary();
  const explanation = libqp.wrap(libqp.encode(Buffer.from(parts.explanation, 'utf8')), 76);
  const mixed = crlf(
    `Content-Type: multipart/mixed;\n\tboundary="${mixedBoundary}"\n\n` +
      `--${mixedBoundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n${explanation}\n` +
      `--${mixedBoundary}\nContent-Type: ${WKS_MEDIA_TYPE}\n\n${encrypted.trimEnd()}\n` +
      `--${mixedBoundary}--\n`,
  );
  const signature = await sign({ message: await createMessage({ binary: mixed }), signingKeys: parts.signingKey, detached: true, format: 'armored' });
  const hash = (await readSignature({ armoredSignature: signature })).packets[0]!.hashAlgorithm;
  const micalg = `pgp-${(hash === null ? undefined : MICALG[hash]) ?? 'sha256'}`;
  const signedBoundary = boundary();
  return Buffer.concat([
    crlf(
      `Content-Type: multipart/signed; micalg=${micalg}; protocol="application/pgp-signature";\n\tboundary="${signedBoundary}"\n\n` +
        `--${signedBoundary}\n`,
    ),
    mixed,
    crlf(`\n--${signedBoundary}\nContent-Type: application/pgp-signature\n\n${signature.trimEnd()}\n--${signedBoundary}--\n`),
  ]);
}

/** RFC 3156 §5 micalg names by OpenPGP hash algorithm id. */
const MICALG: Record<number, string> = {
  [enums.hash.sha1]: 'sha1',
  [enums.hash.sha224]: 'sha224',
  [enums.hash.sha256]: 'sha256',
  [enums.hash.sha384]: 'sha384',
  [enums.hash.sha512]: 'sha512',
};

function boundary(): string {
  return `=-=lacre-${randomBytes(12).toString('hex')}=-=`;
}

function crlf(text: string): Buffer {
  return Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf8');
}
