import type { PublicKey } from 'openpgp';
import type { RecipientKeys } from '../keys/types.js';

export type RecipientAction =
  | 'encrypted-mime'
  | 'encrypted-inline'
  | 'plain-no-key'
  | 'plain-unusable-key'
  | 'already-encrypted'
  | 'incoming-box'
  | 'already-delivered';

/**
 * plain: the original bytes, streamed to the relay while the input is read.
 * mime / inline: PGP/MIME or inline PGP. whole: the whole message as one OpenPGP message (Incoming Box).
 * raw: the original bytes of an already encrypted message, for an Incoming Box.
 */
export type CopyKind = 'plain' | 'mime' | 'inline' | 'whole' | 'raw';
export type EncryptedKind = 'mime' | 'inline' | 'whole';

/** A recipient after routing: its keys, and the Incoming Box user it is delivered to (if any). */
export interface RoutedRecipient {
  readonly address: string;
  readonly lookup: RecipientKeys;
  readonly boxUser?: string;
}

export interface Copy {
  readonly kind: CopyKind;
  readonly recipients: string[];
  /** The keys this copy is encrypted to (empty for plain and raw copies). */
  readonly keys: PublicKey[];
  /** Delivered into this user's Incoming Box instead of reinjected. */
  readonly boxUser?: string;
}

export interface Plan {
  readonly copies: Copy[];
  readonly actions: Map<string, RecipientAction>;
}

export interface PlanInput {
  readonly recipients: readonly RoutedRecipient[];
  /** Why the message must pass untouched (already encrypted), if it must. */
  readonly alreadyEncrypted: string | undefined;
  /** Whether the message has the shape inline PGP can carry (a single text/plain part). */
  readonly inlineEligible: boolean;
  /** One copy per style for all keyed recipients instead of one copy each. */
  readonly groupRecipients: boolean;
  /** What an Incoming Box copy is: the whole message encrypted, or PGP/MIME. */
  readonly boxScheme: 'openpgp' | 'openpgp-mime';
  /** Recipients whose copy of this very message a downstream already accepted (a retry): they get none. */
  readonly alreadyDelivered?: ReadonlySet<string>;
}

/**
 * Decides who gets what. Recipients refused by policy never reach the plan: the listener answers them at
 * RCPT time. Plain recipients share one copy (they receive the very bytes that were sent); keyed recipients
 * get one copy each unless grouping is asked for; an Incoming Box copy is always its user's alone.
 */
export function planDelivery(input: PlanInput): Plan {
  const actions = new Map<string, RecipientAction>();
  const plain: string[] = [];
  const copies: Copy[] = [];
  const grouped = new Map<CopyKind, Copy>();

  for (const { address, lookup, boxUser } of input.recipients) {
    if (input.alreadyDelivered?.has(address)) {
      actions.set(address, 'already-delivered');
      continue;
    }
    if (boxUser !== undefined) {
      const encrypted = input.alreadyEncrypted === undefined && lookup.kind === 'usable';
      const kind: CopyKind = !encrypted ? 'raw' : input.boxScheme === 'openpgp' ? 'whole' : 'mime';
      actions.set(address, encrypted ? 'incoming-box' : 'already-encrypted');
      copies.push({ kind, recipients: [address], keys: lookup.kind === 'usable' && encrypted ? [...lookup.keys] : [], boxUser });
      continue;
    }
    if (input.alreadyEncrypted !== undefined || lookup.kind !== 'usable') {
      plain.push(address);
      actions.set(address, input.alreadyEncrypted !== undefined ? 'already-encrypted' : lookup.kind === 'none' ? 'plain-no-key' : 'plain-unusable-key');
      continue;
    }
    const kind: CopyKind = lookup.style === 'inline' && input.inlineEligible ? 'inline' : 'mime';
    actions.set(address, kind === 'inline' ? 'encrypted-inline' : 'encrypted-mime');
    const group = input.groupRecipients ? grouped.get(kind) : undefined;
    if (group) {
      group.recipients.push(address);
      group.keys.push(...lookup.keys);
    } else {
      const copy: Copy = { kind, recipients: [address], keys: [...lookup.keys] };
      copies.push(copy);
      if (input.groupRecipients) grouped.set(kind, copy);
    }
  }
  if (plain.length > 0) copies.unshift({ kind: 'plain', recipients: plain, keys: [] });
  return { copies, actions };
}
