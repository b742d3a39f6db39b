import { fieldValue, findField, type HeaderField } from './header.js';

/**
 * Postfix's queue id as its cleanup(8) wrote it into the topmost Received field: "by HOST (Postfix[, from userid N])
 * [with PROTO] id QUEUEID". Postfix sends no XFORWARD IDENT for locally submitted mail (sendmail → pickup): its
 * queue file records no original queue id, only SOURCE=LOCAL goes. Used for the log line, the delivery ledger
 * and the box's blob ids, always next to a digest of the message itself, so a forged one matches nothing else;
 * a Received field that Postfix did not write yields nothing.
 */
export function postfixQueueIdOf(fields: readonly HeaderField[]): string | undefined {
  const received = findField(fields, 'received');
  if (!received) return undefined;
  const match = /\bby\s+\S+\s+\(Postfix\b[^)]*\)(?:\s+with\s+\S+)?\s+id\s+([0-9A-Za-z]{6,40})\b/.exec(fieldValue(received).slice(0, 2000));
  return match?.[1];
}
