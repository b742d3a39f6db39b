/** `lacre keys import|list|show|delete`: key administration from the command line. */
import { createReadStream } from 'node:fs';
import { Option, type Command } from 'commander';
import { errorMessage, KeyRejectedError } from '../errors.js';
import { readStoredKey } from '../crypto/keys.js';
import { formatByteSize } from '../util/byte-size.js';
import { InvalidAddressError } from '../keys/address.js';
import { KeyStore, type ImportOutcome, type KeyRow } from '../keys/store.js';
import type { EncryptionStyle, KeyStatus } from '../keys/types.js';
import type { CommandDatabase } from './database.js';

/** Opens the database for the running subcommand (the command gives access to global options, e.g. --config). */
export type OpenContext = (command: Command) => Promise<CommandDatabase>;

export interface CliIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  setExitCode(code: number): void;
}

const processIo: CliIo = {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  setExitCode: (code) => {
    process.exitCode = code;
  },
};

interface ImportFlags {
  email: string[];
  style?: EncryptionStyle;
  status: KeyStatus;
}

export function registerKeysCommands(program: Command, openContext: OpenContext, io: CliIo = processIo): Command {
  const keys = program.command('keys').description('manage recipients\u2019 OpenPGP public keys');
  const run = runner(openContext, io);

  keys
    .command('import')
    .description('import public keys (armored, or binary as gpg --export writes them) from files, or from standard input with "-"')
    .argument('<files...>', 'files holding public keys, or - for standard input')
    .option('--email <address>', 'store the key for this address instead of its user IDs (repeatable)', collect, [])
    .addOption(new Option('--style <style>', 'message style for these addresses').choices(['mime', 'inline']))
    .addOption(new Option('--status <status>', 'key status').choices(['pending', 'confirmed', 'disabled']).default('confirmed'))
    .action((files: string[], flags: ImportFlags, command: Command) => run(command, (store) => importFiles(store, files, flags, io)));

  keys
    .command('list')
    .description('list stored keys, and whether each can encrypt now')
    .option('--json', 'machine-readable output')
    .action((flags: { json?: boolean }, command: Command) => run(command, async (store) => printRows(await store.list(), flags.json === true, io)));

  keys
    .command('show')
    .description('show the keys of one address (any status), and whether each can encrypt now')
    .argument('<address>')
    .option('--json', 'machine-readable output')
    .action((address: string, flags: { json?: boolean }, command: Command) => run(command, (store) => showAddress(store, address, flags.json === true, io)));

  keys
    .command('delete')
    .description('delete an address (with all its keys) or one key by fingerprint (from every address)')
    .argument('<address-or-fingerprint>')
    .action((target: string, _flags: unknown, command: Command) =>
      run(command, async (store) => {
        const deleted = await store.delete(target);
        if (deleted === 0) return fail(io, `no key matches ${target}`);
        io.stdout.write(`deleted ${deleted} key${deleted === 1 ? '' : 's'}\n`);
      }),
    );

  return keys;
}

function runner(openContext: OpenContext, io: CliIo) {
  return async (command: Command, body: (store: KeyStore) => Promise<void>): Promise<void> => {
    const context = await openContext(command);
    try {
      await body(new KeyStore(context.db, context.config.keys));
    } catch (error) {
      if (!(error instanceof KeyRejectedError || error instanceof InvalidAddressError)) throw error;
      fail(io, error.message);
    } finally {
      await context.db.close();
    }
  };
}

async function importFiles(store: KeyStore, files: string[], flags: ImportFlags, io: CliIo): Promise<void> {
  let refusals = 0;
  for (const file of files) {
    const source = file === '-' ? 'stdin' : file;
    const input = await readKeyInput(file, store.limits.maxKeyBytes, io);
    if (typeof input === 'string') {
      refusals += 1;
      io.stderr.write(`refused ${source}: ${input}\n`);
      continue;
    }
    const outcomes = await store.importKeys(input, {
      ...(flags.email.length > 0 ? { emails: flags.email } : {}),
      ...(flags.style ? { style: flags.style } : {}),
      status: flags.status,
    });
    for (const outcome of outcomes) {
      if (outcome.kind === 'refused') refusals += 1;
      reportImport(source, outcome, io);
    }
  }
  if (refusals > 0) io.setExitCode(1);
}

/** The bytes of a file (or stdin for "-"), or why they are refused; never reads more than one byte past the limit. */
async function readKeyInput(file: string, maxBytes: number, io: CliIo): Promise<Buffer | string> {
  let read: BoundedRead;
  try {
    read = await readAtMost(file === '-' ? io.stdin : createReadStream(file), maxBytes);
  } catch (error) {
    return `cannot read: ${errorMessage(error)}`;
  }
  if (read.overLimit) return `larger than keys.max_key_bytes (${formatByteSize(maxBytes)}); nothing was imported`;
  if (read.bytes.toString('utf8').trim() === '') return file === '-' ? 'no key on standard input' : 'the file is empty';
  return read.bytes;
}

interface BoundedRead {
  bytes: Buffer;
  overLimit: boolean;
}

/** Reads until the end or until more than `maxBytes` arrived; then stops (the stream is destroyed, not drained). */
async function readAtMost(stream: NodeJS.ReadableStream, maxBytes: number): Promise<BoundedRead> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    total += bytes.length;
    if (total > maxBytes) return { bytes: Buffer.alloc(0), overLimit: true };
    chunks.push(bytes);
  }
  return { bytes: Buffer.concat(chunks), overLimit: false };
}

function reportImport(source: string, outcome: ImportOutcome, io: CliIo): void {
  switch (outcome.kind) {
    case 'imported': {
      const verb = outcome.inserted.length > 0 ? 'imported' : 'updated';
      const expiry = outcome.expiresAt ? ` (expires ${outcome.expiresAt.toISOString()})` : '';
      io.stdout.write(`${verb} ${outcome.fingerprint} for ${outcome.emails.join(', ')}${expiry}\n`);
      return;
    }
    case 'updated-unusable':
      io.stdout.write(`updated ${outcome.fingerprint} for ${outcome.emails.join(', ')}: ${outcome.reason}; it will no longer be used\n`);
      return;
    case 'refused':
      io.stderr.write(`refused ${source}${outcome.fingerprint ? ` key ${outcome.fingerprint}` : ''}: ${outcome.reason}\n`);
  }
}

async function printRows(rows: KeyRow[], json: boolean, io: CliIo): Promise<void> {
  const described = await describeRows(rows);
  if (json) {
    io.stdout.write(`${JSON.stringify(described.map(({ userIds: _userIds, ...listed }) => listed), null, 2)}\n`);
    return;
  }
  if (rows.length === 0) {
    io.stdout.write('no keys stored\n');
    return;
  }
  const header = ['ADDRESS', 'STYLE', 'STATUS', 'FINGERPRINT', 'EXPIRES', 'USABLE'];
  const lines = described.map((key) => [key.email, key.style, key.status, key.fingerprint, key.expiresAt?.slice(0, 10) ?? 'never', usableText(key)]);
  const table = [header, ...lines];
  const widths = header.map((_, column) => Math.max(...table.map((line) => line[column]!.length)));
  for (const line of table) io.stdout.write(`${line.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()}\n`);
}

async function showAddress(store: KeyStore, address: string, json: boolean, io: CliIo): Promise<void> {
  const rows = await store.show(address);
  if (rows.length === 0) return fail(io, `no keys for ${address}`);
  const described = await describeRows(rows);
  if (json) {
    io.stdout.write(`${JSON.stringify(described, null, 2)}\n`);
    return;
  }
  for (const key of described) {
    io.stdout.write(
      [
        `${key.email}  ${key.fingerprint}`,
        `  status:   ${key.status}`,
        `  style:    ${key.style}`,
        `  expires:  ${key.expiresAt ?? 'never'}`,
        `  usable:   ${usableText(key)}`,
        ...key.userIds.map((userId) => `  user ID:  ${userId}`),
        `  imported: ${key.createdAt}, updated: ${key.updatedAt}`,
        '',
      ].join('\n'),
    );
  }
}

interface KeyDescription {
  /** Whether the key can encrypt now, judged as the key directory judges it at send time (status aside). */
  usable: boolean;
  unusableReason: string | null;
  userIds: string[];
}

/** Each row with its key judged; a key stored for several addresses is parsed once. */
async function describeRows(rows: KeyRow[]): Promise<(ReturnType<typeof publicFields> & KeyDescription)[]> {
  const now = new Date();
  const judged = new Map<string, Promise<KeyDescription>>();
  return Promise.all(
    rows.map(async (row) => {
      let description = judged.get(row.armored);
      if (description === undefined) judged.set(row.armored, (description = describeKey(row.armored, now)));
      return { ...publicFields(row), ...(await description) };
    }),
  );
}

async function describeKey(armored: string, now: Date): Promise<KeyDescription> {
  const { key, usability } = await readStoredKey(armored, now);
  return { usable: usability.usable, unusableReason: usability.usable ? null : usability.reason, userIds: key?.getUserIDs() ?? [] };
}

function usableText(key: KeyDescription): string {
  return key.usable ? 'yes' : `no (${key.unusableReason})`;
}

function publicFields(row: KeyRow) {
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

function fail(io: CliIo, message: string): void {
  io.stderr.write(`${message}\n`);
  io.setExitCode(1);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
