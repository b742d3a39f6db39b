import { createHash } from 'node:crypto';
import { INCOMING_NAMESPACE } from '../config/schema.js';

/**
 * The Incoming Box blob id of one recipient's copy: a UUID (version 8, RFC 9562) derived from Postfix's queue
 * id, the SHA-256 of the message and the recipient. Postfix keeps the queue id when it retries a message, so
 * a retry after a 4xx writes the same id and the box answers 409 instead of storing it twice (rule 6); the
 * same bytes sent again as a new message get a new queue id, hence a new blob. Soledad's `MX` is hashed as `mx`,
 * Lacre's spelling when ids were first derived, so a retry that straddles the change to `MX` keeps its id.
 */
export function blobIdFor(parts: { queueId: string | undefined; digest: string; recipient: string; namespace: string }): string {
  const namespace = parts.namespace === INCOMING_NAMESPACE ? 'mx' : parts.namespace;
  const hash = createHash('sha256')
    .update(['lacre-blob-v1', parts.queueId ?? '', parts.digest, parts.recipient.toLowerCase(), namespace].join('\0'))
    .digest();
  const bytes = hash.subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x80;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
