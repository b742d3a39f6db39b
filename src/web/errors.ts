/** The key service's refusals: a stable code a program can act on, and a message in the user's language. */
import { HttpError } from '../errors.js';

/** The public codes (README "Key service API"); never renamed, only added to. */
export type WebErrorCode =
  | 'not-a-key'
  | 'secret-key'
  | 'expired'
  | 'revoked'
  | 'no-encryption-subkey'
  | 'weak-algorithm'
  | 'address-not-in-key'
  | 'domain-not-served'
  | 'invalid-address'
  | 'invalid-request'
  | 'no-key'
  | 'token-unknown'
  | 'token-expired'
  | 'token-used'
  | 'too-many-requests'
  | 'too-large'
  | 'mail-not-sent'
  | 'unavailable'
  | 'not-found'
  | 'method-not-allowed';

/**
 * A refusal of the key service. `msgid` is the English message (and the gettext msgid); `values` fill its
 * `{placeholders}`. The route's error handler translates it and answers `{"error": code, "message": ...}`.
 */
export class WebError extends HttpError {
  constructor(
    status: number,
    readonly code: WebErrorCode,
    readonly msgid: string,
    readonly values: Readonly<Record<string, string | number>> = {},
    headers: Readonly<Record<string, string>> = {},
  ) {
    super(status, code, headers);
  }
}
