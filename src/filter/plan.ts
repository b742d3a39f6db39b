import type { PublicKey } from 'openpgp';
import type { RecipientKeys } from '../keys/types.js';

export type RecipientAction = 'encrypted-mime' | 'encrypted-inline' | 'plain-no-key' | 'plain-unusable-key' | 'already-encrypted';
export type CopyKind = 'plain' | 'mime' | 'inline';

export interface Copy {
  readonly kind: CopyKind;
  readonly recipients: string[];
  /** The keys this copy is encrypted to (empty for plain copies). */
  readonly keys: PublicKey[];
}

export interface Plan {
  readonly copies: Copy[];
  readonly actions: Map<string, RecipientAction>;
}

export interface PlanInput {
  /** Envelope recipients as given, each with its lookup result. */
  readonly recipients: ReadonlyArray<{ address: string; lookup: RecipientKeys }>;
  /** Why the message must pass untouched (already encrypted), if it must. */
  readonly alreadyEncrypted: string | undefined;
  /** Whether the message has the shape inline PGP can carry (a single text/plain part). */
  readonly inlineEligible: boolean;
  /** One copy per style for all keyed recipients instead of one copy each. */
  readonly groupRecipients: boolean;
}

/**
 * Decides who gets what. Recipients refused by policy (on_unusable_key = tempfail/reject) never reach the
 * plan: the listener answers them at RCPT time. Plain recipients share one copy: they receive the very bytes
 * that were sent, so one transaction serves them all.
 */
export function planDelivery(input: PlanInput): Plan {
  const actions = new Map<string, RecipientAction>();
  const plain: string[] = [];
  const copies: Copy[] = [];
  const grouped = new Map<CopyKind, Copy>();

  for (const { address, lookup } of input.recipients) {
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
