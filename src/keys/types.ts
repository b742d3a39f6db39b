import type { PublicKey } from 'openpgp';

export type KeyStatus = 'pending' | 'confirmed' | 'disabled';
export type EncryptionStyle = 'mime' | 'inline';

/** What the filter needs to know about one recipient. */
export type RecipientKeys =
  /** At least one confirmed key is usable now (not expired, not revoked, can encrypt). */
  | { kind: 'usable'; address: string; style: EncryptionStyle; keys: PublicKey[] }
  /** Confirmed keys exist but none is usable now (all expired, revoked, ...). */
  | { kind: 'unusable'; address: string; reason: string }
  | { kind: 'none'; address: string };

/** Key lookup as the filter uses it: cached, policy applied. Throws DatabaseUnavailableError when the store cannot be read. */
export interface KeyDirectory {
  lookup(address: string): Promise<RecipientKeys>;
  close(): Promise<void>;
}
