/**
 * The admin operations on keys, as data: what the admin socket serves and what `lacre keys` prints. One interface,
 * two ways in: LocalKeyAdmin works on the database (the socket's server, and `lacre keys` when no service runs),
 * AdminClient (client.ts) asks the running service over its socket. Both give the same structures and the same
 * refusals, so the command prints the same either way.
 */
import { readStoredKey } from '../crypto/keys.js';
import { DatabaseUnavailableError, KeyRejectedError, LacreError } from '../errors.js';
import { InvalidAddressError } from '../keys/address.js';
import type { ImportOutcome, KeyRow, KeyStore } from '../keys/store.js';
import type { EncryptionStyle, KeyStatus } from '../keys/types.js';

export const ADMIN_REFUSAL_STATUS = {
  'invalid-request': 400,
  'invalid-address': 400,
  'key-rejected': 422,
  'no-key': 404,
  'not-found': 404,
  'too-large': 413,
  unavailable: 503,
} as const;

export type AdminRefusalCode = keyof typeof ADMIN_REFUSAL_STATUS;

/** An admin operation refused: the code says why (scripts match on it), the message says it to a person. */
export class AdminRefusal extends LacreError {
  constructor(
    readonly code: AdminRefusalCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ImportRequest {
  /** Armored text, or the bytes of a file (armored or binary, as gpg --export writes them). */
  readonly key: string | Uint8Array;
  /** Store the key for these addresses instead of its user IDs. */
  readonly emails?: readonly string[];
  readonly style?: EncryptionStyle;
  readonly status?: KeyStatus;
}

/** An ImportOutcome with its date as ISO text, as it travels in JSON. */
export type ImportReport =
  | { kind: 'imported'; fingerprint: string; emails: string[]; inserted: string[]; expiresAt: string | null }
  | { kind: 'updated-unusable'; fingerprint: string; emails: string[]; reason: string }
  | { kind: 'refused'; fingerprint: string | null; reason: string };

/** One stored key as an admin sees it: the row without its armor, and whether the key can encrypt now. */
export interface KeyView {
  email: string;
  style: EncryptionStyle;
  status: KeyStatus;
  fingerprint: string;
  expiresAt: string | null;
  createdAt: string;
  updatedAt: string;
  /** Judged as the key directory judges it at send time (status aside). */
  usable: boolean;
  unusableReason: string | null;
  userIds: string[];
}

export interface RestoreReport {
  fingerprint: string;
  /** The addresses whose key it is again. */
  emails: string[];
  /** Their other confirmed keys, now disabled. */
  disabled: number;
}

export interface KeyAdmin {
  importKeys(request: ImportRequest): Promise<ImportReport[]>;
  list(): Promise<KeyView[]>;
  /** Refused with no-key when the address has none. */
  show(address: string): Promise<KeyView[]>;
  pending(): Promise<KeyView[]>;
  /** Resolves to the number of keys disabled; refused with no-key when none was enabled. */
  disable(addressOrFingerprint: string): Promise<number>;
  /** Refused with no-key when no disabled key matches. */
  restore(fingerprint: string, address?: string): Promise<RestoreReport>;
  /** Removes an address (with its keys) or one key from every address; refused with no-key when nothing matches. */
  remove(addressOrFingerprint: string): Promise<number>;
  /** Largest key input accepted. */
  readonly maxKeyBytes: number;
  close(): Promise<void>;
}

/** The operations on the database itself. */
export class LocalKeyAdmin implements KeyAdmin {
  readonly maxKeyBytes: number;

  constructor(
    private readonly store: KeyStore,
    private readonly onClose: () => Promise<void> = async () => undefined,
  ) {
    this.maxKeyBytes = store.limits.maxKeyBytes;
  }

  importKeys(request: ImportRequest): Promise<ImportReport[]> {
    return refusing(async () => {
      const outcomes = await this.store.importKeys(request.key, {
        ...(request.emails && request.emails.length > 0 ? { emails: [...request.emails] } : {}),
        ...(request.style ? { style: request.style } : {}),
        ...(request.status ? { status: request.status } : {}),
      });
      return outcomes.map(importReport);
    });
  }

  list(): Promise<KeyView[]> {
    return refusing(async () => describeRows(await this.store.list()));
  }

  show(address: string): Promise<KeyView[]> {
    return refusing(async () => {
      const rows = await this.store.show(address);
      if (rows.length === 0) throw new AdminRefusal('no-key', `no keys for ${address}`);
      return describeRows(rows);
    });
  }

  pending(): Promise<KeyView[]> {
    return refusing(async () => describeRows(await this.store.pendingList()));
  }

  disable(addressOrFingerprint: string): Promise<number> {
    return refusing(async () => {
      const disabled = await this.store.disable(addressOrFingerprint);
      if (disabled === 0) throw new AdminRefusal('no-key', `no confirmed or pending key matches ${addressOrFingerprint}`);
      return disabled;
    });
  }

  restore(fingerprint: string, address?: string): Promise<RestoreReport> {
    return refusing(async () => {
      const restored = await this.store.restore(fingerprint, address);
      if (restored.emails.length === 0) {
        throw new AdminRefusal('no-key', `no disabled key ${fingerprint}${address === undefined ? '' : ` for ${address}`}`);
      }
      return restored;
    });
  }

  remove(addressOrFingerprint: string): Promise<number> {
    return refusing(async () => {
      const removed = await this.store.delete(addressOrFingerprint);
      if (removed === 0) throw new AdminRefusal('no-key', `no key matches ${addressOrFingerprint}`);
      return removed;
    });
  }

  close(): Promise<void> {
    return this.onClose();
  }
}

/** Runs an operation with the store's refusals turned into AdminRefusals. */
async function refusing<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof InvalidAddressError) throw new AdminRefusal('invalid-address', error.message);
    if (error instanceof KeyRejectedError) throw new AdminRefusal('key-rejected', error.message);
    if (error instanceof DatabaseUnavailableError) throw new AdminRefusal('unavailable', error.message);
    throw error;
  }
}

function importReport(outcome: ImportOutcome): ImportReport {
  if (outcome.kind !== 'imported') return outcome;
  return { ...outcome, expiresAt: outcome.expiresAt?.toISOString() ?? null };
}

/** Each row with its key judged; a key stored for several addresses is parsed once. */
export async function describeRows(rows: KeyRow[], now = new Date()): Promise<KeyView[]> {
  const judged = new Map<string, Promise<Pick<KeyView, 'usable' | 'unusableReason' | 'userIds'>>>();
  return Promise.all(
    rows.map(async (row) => {
      let description = judged.get(row.armored);
      if (description === undefined) judged.set(row.armored, (description = describeKey(row.armored, now)));
      return { ...publicFields(row), ...(await description) };
    }),
  );
}

async function describeKey(armored: string, now: Date): Promise<Pick<KeyView, 'usable' | 'unusableReason' | 'userIds'>> {
  const { key, usability } = await readStoredKey(armored, now);
  return { usable: usability.usable, unusableReason: usability.usable ? null : usability.reason, userIds: key?.getUserIDs() ?? [] };
}

function publicFields(row: KeyRow): Omit<KeyView, 'usable' | 'unusableReason' | 'userIds'> {
  return {
    email: row.email,
    style: row.style,
    status: row.status,
    fingerprint: row.fingerprint,
    expiresAt: row.expiresAt?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}
