import {
  BoxDeliveryError,
  DatabaseUnavailableError,
  DataTimeoutError,
  LacreError,
  MessageRejectedError,
  MessageTooLargeError,
  NoBoxError,
  RecipientPolicyError,
  RelayError,
  StreamedCopyError,
} from '../errors.js';
import type { MessageResult } from './pipeline.js';

/** The one place where an outcome becomes an SMTP reply (and, for `lacre pipe`, an exit code) and a metrics kind. */
export interface SmtpReply {
  readonly code: number;
  readonly enhanced: string;
  readonly text: string;
}

export const ACCEPTED: SmtpReply = { code: 250, enhanced: '2.0.0', text: 'message accepted' };

/**
 * The error label of lacre_errors_total: relay (reinjection refused or unreachable), database (key store
 * unreadable), key (a recipient refused because their keys are unusable, by encryption.on_unusable_key or
 * incoming_box.no_key), parse (the message as received cannot be taken: header block or message too large),
 * box (an Incoming Box did not take a copy, or a box domain has no box for the address), other (anything
 * unexpected: a 451 4.3.0 and an error line).
 */
export const ERROR_KINDS = ['relay', 'database', 'key', 'parse', 'box', 'other'] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/** What a failure means: the SMTP reply it gets, and the kind it is counted under. */
export interface FailureOutcome {
  readonly reply: SmtpReply;
  readonly kind: ErrorKind;
}

const UNEXPECTED: FailureOutcome = { reply: { code: 451, enhanced: '4.3.0', text: 'temporary failure processing the message, try again later' }, kind: 'other' };

/** Decided by the class of the error (src/errors.ts); anything else is an unexpected, temporary failure. */
export function failureOutcome(error: unknown): FailureOutcome {
  // The copy's own failure answers for it (and abortedRecipientReplies for whom).
  if (error instanceof StreamedCopyError) return failureOutcome(error.cause);
  if (error instanceof DatabaseUnavailableError) return { reply: { code: 451, enhanced: '4.3.0', text: 'key store unavailable, try again later' }, kind: 'database' };
  // As Postfix's smtpd on its own deadline: 421 (the connection closes mid-DATA, no other reply can follow), 4.4.2.
  if (error instanceof DataTimeoutError) return { reply: { code: 421, enhanced: '4.4.2', text: 'Error: timeout exceeded' }, kind: 'other' };
  if (error instanceof MessageTooLargeError) return { reply: { code: 552, enhanced: '5.3.4', text: 'message too large' }, kind: 'parse' };
  if (error instanceof MessageRejectedError) return { reply: { code: 554, enhanced: error.enhancedCode, text: error.message }, kind: 'parse' };
  if (error instanceof NoBoxError) return { reply: { code: 550, enhanced: '5.1.1', text: error.message }, kind: 'box' };
  if (error instanceof RecipientPolicyError) {
    const reply = error.permanent ? { code: 550, enhanced: '5.7.1', text: error.message } : { code: 450, enhanced: '4.7.1', text: error.message };
    return { reply, kind: 'key' };
  }
  if (error instanceof BoxDeliveryError) return { reply: boxReply(error), kind: 'box' };
  if (error instanceof RelayError) return { reply: relayReply(error), kind: 'relay' };
  return UNEXPECTED;
}

export function errorReply(error: unknown): SmtpReply {
  return failureOutcome(error).reply;
}

export function errorKind(error: unknown): ErrorKind {
  return failureOutcome(error).kind;
}

/**
 * SMTP mode: one answer for the whole transaction. 250 only when every copy was accepted; any temporary
 * failure makes it a 4xx (Postfix keeps the message and retries); permanent failures alone make it a 5xx.
 */
export function messageReply(result: MessageResult): SmtpReply {
  const errors = result.results.flatMap((r) => (r.error ? [r.error] : [...(r.rejected?.values() ?? [])]));
  if (errors.length === 0) return ACCEPTED;
  const temporary = errors.find((error) => errorReply(error).code < 500);
  return errorReply(temporary ?? errors[0]);
}

/** LMTP mode: one answer per envelope recipient, in envelope order. */
export function recipientReplies(recipients: readonly string[], result: MessageResult): SmtpReply[] {
  const byRecipient = new Map<string, LacreError | undefined>();
  for (const { copy, error, rejected } of result.results) {
    for (const rcpt of copy.recipients) byRecipient.set(rcpt, error ?? rejected?.get(rcpt));
  }
  return recipients.map((rcpt) => {
    const error = byRecipient.get(rcpt);
    return error ? errorReply(error) : ACCEPTED;
  });
}

const ANOTHER_COPY_FAILED: SmtpReply = { code: 451, enhanced: '4.3.0', text: 'another copy of this message failed, nothing was delivered: try again later' };

/**
 * LMTP mode, when the message as a whole failed (`error` was thrown, nothing was delivered). A failed streamed
 * copy (pipeline.ts) answers its own recipients; the others get a temporary failure, since nothing was wrong
 * with their copies, rather than a refusal that would bounce them.
 */
export function abortedRecipientReplies(recipients: readonly string[], error: unknown): SmtpReply[] {
  const reply = errorReply(error);
  if (!(error instanceof StreamedCopyError)) return recipients.map(() => reply);
  return recipients.map((rcpt) => (error.recipients.includes(rcpt) ? reply : ANOTHER_COPY_FAILED));
}

function relayReply(error: RelayError): SmtpReply {
  return error.permanent
    ? { code: 554, enhanced: '5.3.0', text: `reinjection refused: ${oneLine(error.message)}` }
    : { code: 451, enhanced: '4.4.1', text: `reinjection failed, try again later: ${oneLine(error.message)}` };
}

/** Incoming Box answers (docs/incoming-box.md); 409 never gets here: it is a success. */
function boxReply(error: BoxDeliveryError): SmtpReply {
  switch (error.status) {
    case 507:
      // Temporary, as mailbox-full usually is (RFC 3463 X.2.2): Postfix keeps the message until the user makes room
      // (or its maximal_queue_lifetime ends with a bounce), instead of bouncing at once what a cleanup would save.
      return { code: 452, enhanced: '4.2.2', text: 'mailbox full (Incoming Box quota exceeded), try again later' };
    case 404:
      return { code: 550, enhanced: '5.1.1', text: 'no such Incoming Box user' };
    case 401:
    case 403:
      return { code: 451, enhanced: '4.7.0', text: 'Incoming Box refused our credentials, try again later' };
    case 400:
      return { code: 451, enhanced: '4.3.0', text: `Incoming Box refused the request, try again later: ${oneLine(error.message)}` };
    default:
      return { code: 451, enhanced: '4.4.1', text: `Incoming Box delivery failed, try again later: ${oneLine(error.message)}` };
  }
}

export type SmtpReplyError = Error & { responseCode: number };

/** smtp-server sends `${responseCode} ${message}`. */
export function toSmtpError(reply: SmtpReply): SmtpReplyError {
  return Object.assign(new Error(`${reply.enhanced} ${reply.text}`), { responseCode: reply.code });
}

export function isSmtpReplyError(error: unknown): error is SmtpReplyError {
  return error instanceof Error && typeof (error as Partial<SmtpReplyError>).responseCode === 'number';
}

export function replyText(reply: SmtpReply): string {
  return `${reply.enhanced} ${reply.text}`;
}

/** sysexits(3) for `lacre pipe`: Postfix's pipe(8) retries 75 and bounces the rest. */
export function exitCodeFor(reply: SmtpReply): number {
  if (reply.code < 400) return 0;
  if (reply.code < 500) return 75; // EX_TEMPFAIL
  if (reply.enhanced.startsWith('5.3.4') || reply.enhanced.startsWith('5.6')) return 65; // EX_DATAERR
  return 69; // EX_UNAVAILABLE
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').slice(0, 200);
}
