import {
  BoxDeliveryError,
  DatabaseUnavailableError,
  MessageRejectedError,
  MessageTooLargeError,
  RecipientPolicyError,
  RelayError,
} from '../errors.js';

export const ERROR_KINDS = ['relay', 'database', 'key', 'parse', 'box', 'other'] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

/**
 * The error label of lacre_errors_total, from the typed errors of src/errors.ts:
 * relay (reinjection refused or unreachable), database (key store unreadable), key (a recipient refused
 * because their keys are unusable, by encryption.on_unusable_key or incoming_box.no_key), parse (the message
 * as received cannot be taken: header block or message too large), box (an Incoming Box did not take a copy,
 * or a box domain has no box for the address), other (anything unexpected: a 451 4.3.0 and an error line).
 */
export function errorKind(error: unknown): ErrorKind {
  if (error instanceof RelayError) return 'relay';
  if (error instanceof DatabaseUnavailableError) return 'database';
  if (error instanceof BoxDeliveryError) return 'box';
  if (error instanceof MessageRejectedError || error instanceof MessageTooLargeError) return 'parse';
  // filter.ts refuses "no Incoming Box for this recipient" with 5.1.1; every other policy refusal is about keys.
  if (error instanceof RecipientPolicyError) return error.enhancedCode === '5.1.1' ? 'box' : 'key';
  return 'other';
}
