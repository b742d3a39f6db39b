/**
 * `lacre keys import|list|show|delete|remove|disable|restore|pending`: key administration from the command line.
 * While `lacre serve` runs, the commands go through its admin socket (admin.socket), else to the database itself:
 * both ways give the same data (src/admin/operations.ts), printed here by the same code.
 */
import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { errorMessage } from '../errors.js';
import { formatByteSize } from '../util/byte-size.js';
import { AdminClient } from '../admin/client.js';
import { AdminRefusal, LocalKeyAdmin, type ImportReport, type KeyAdmin, type KeyView, type RestoreReport } from '../admin/operations.js';
import type { Config } from '../config/schema.js';
import { KeyStore } from '../keys/store.js';
import type { EncryptionStyle, KeyStatus } from '../keys/types.js';
import type { CommandDatabase } from './database.js';

/** What the keys commands need of the main program (the command gives access to global options, e.g. --config). */
export interface KeysContext {
  configFrom(command: Command): Config;
  /** Opens the database, when no service answers on admin.socket. */
  openDatabase(command: Command): Promise<CommandDatabase>;
}

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

interface JsonFlag {
  json?: boolean;
}

export function registerKeysCommands(program: Command, context: KeysContext, io: CliIo = processIo): Command {
  const keys = program.command('keys').description('manage recipients\u2019 OpenPGP public keys (through the running service when one answers on admin.socket)');
  const run = runner(context, io);

  keys
    .command('import')
    .description('import public keys (armored, or binary as gpg --export writes them) from files, or from standard input with "-"')
    .argument('<files...>', 'files holding public keys, or - for standard input')
    .option('--email <address>', 'store the key for this address instead of its user IDs (repeatable)', collect, [])
    .addOption(new Option('--style <style>', 'message style for these addresses').choices(['mime', 'inline']))
    .addOption(new Option('--status <status>', 'key status').choices(['pending', 'confirmed', 'disabled']).default('confirmed'))
    .action((files: string[], flags: ImportFlags, command: Command) => run(command, (admin) => importFiles(admin, files, flags, io)));

  keys
    .command('list')
    .description('list stored keys, and whether each can encrypt now')
    .option('--json', 'machine-readable output')
    .action((flags: JsonFlag, command: Command) => run(command, async (admin) => printKeys(await admin.list(), flags.json === true, 'no keys stored', io)));

  keys
    .command('pending')
    .description('list the keys waiting for their owner\u2019s confirmation (never used for mail)')
    .option('--json', 'machine-readable output')
    .action((flags: JsonFlag, command: Command) => run(command, async (admin) => printKeys(await admin.pending(), flags.json === true, 'no pending keys', io)));

  keys
    .command('show')
    .description('show the keys of one address (any status), and whether each can encrypt now')
    .argument('<address>')
    .option('--json', 'machine-readable output')
    .action((address: string, flags: JsonFlag, command: Command) => run(command, async (admin) => printDetails(await admin.show(address), flags.json === true, io)));

  keys
    .command('delete')
    .alias('remove')
    .description('delete an address (with all its keys) or one key by fingerprint (from every address)')
    .argument('<address-or-fingerprint>')
    .action((target: string, _flags: unknown, command: Command) =>
      run(command, async (admin) => {
        io.stdout.write(`deleted ${count(await admin.remove(target), 'key')}\n`);
      }),
    );

  keys
    .command('disable')
    .description('stop encrypting to an address\u2019s keys, or to one key by fingerprint; they are kept for restore')
    .argument('<address-or-fingerprint>')
    .action((target: string, _flags: unknown, command: Command) =>
      run(command, async (admin) => {
        io.stdout.write(`disabled ${count(await admin.disable(target), 'key')}\n`);
      }),
    );

  keys
    .command('restore')
    .description('make a disabled key the key of its addresses again (their other confirmed keys become disabled)')
    .argument('<fingerprint>')
    .option('--email <address>', 'restore it for this address only')
    .action((fingerprint: string, flags: { email?: string }, command: Command) =>
      run(command, async (admin) => printRestored(await admin.restore(fingerprint, flags.email), io)),
    );

  return keys;
}

function runner(context: KeysContext, io: CliIo) {
  return async (command: Command, body: (admin: KeyAdmin) => Promise<void>): Promise<void> => {
    const admin = await openAdmin(context, command, io);
    try {
      await body(admin);
    } catch (error) {
      if (!(error instanceof AdminRefusal)) throw error;
      fail(io, error.message);
    } finally {
      await admin.close();
    }
  };
}

/** The running service's admin socket when one answers there, else the database. Says which on stderr. */
async function openAdmin(context: KeysContext, command: Command, io: CliIo): Promise<KeyAdmin> {
  const socket = context.configFrom(command).admin.socket;
  const client = socket === '' ? undefined : await AdminClient.connect(resolve(socket));
  if (client !== undefined) {
    io.stderr.write(`using the running lacre serve (admin socket ${client.path})\n`);
    return client;
  }
  const opened = await context.openDatabase(command);
  return new LocalKeyAdmin(new KeyStore(opened.db, opened.config.keys), () => opened.db.close());
}

async function importFiles(admin: KeyAdmin, files: string[], flags: ImportFlags, io: CliIo): Promise<void> {
  let refusals = 0;
  for (const file of files) {
    const source = file === '-' ? 'stdin' : file;
    const input = await readKeyInput(file, admin.maxKeyBytes, io);
    if (typeof input === 'string') {
      refusals += 1;
      io.stderr.write(`refused ${source}: ${input}\n`);
      continue;
    }
    const outcomes = await admin.importKeys({
      key: input,
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

function reportImport(source: string, outcome: ImportReport, io: CliIo): void {
  switch (outcome.kind) {
    case 'imported': {
      const verb = outcome.inserted.length > 0 ? 'imported' : 'updated';
      const expiry = outcome.expiresAt ? ` (expires ${outcome.expiresAt})` : '';
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

function printKeys(keys: KeyView[], json: boolean, none: string, io: CliIo): void {
  if (json) {
    io.stdout.write(`${JSON.stringify(keys.map(({ userIds: _userIds, ...listed }) => listed), null, 2)}\n`);
    return;
  }
  if (keys.length === 0) {
    io.stdout.write(`${none}\n`);
    return;
  }
  const header = ['ADDRESS', 'STYLE', 'STATUS', 'FINGERPRINT', 'EXPIRES', 'USABLE'];
  const lines = keys.map((key) => [key.email, key.style, key.status, key.fingerprint, key.expiresAt?.slice(0, 10) ?? 'never', usableText(key)]);
  const table = [header, ...lines];
  const widths = header.map((_, column) => Math.max(...table.map((line) => line[column]!.length)));
  for (const line of table) io.stdout.write(`${line.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()}\n`);
}

function printDetails(keys: KeyView[], json: boolean, io: CliIo): void {
  if (json) {
    io.stdout.write(`${JSON.stringify(keys, null, 2)}\n`);
    return;
  }
  for (const key of keys) {
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

function printRestored(restored: RestoreReport, io: CliIo): void {
  const displaced = restored.disabled > 0 ? `; disabled ${count(restored.disabled, 'other key')}` : '';
  io.stdout.write(`restored ${restored.fingerprint} for ${restored.emails.join(', ')}${displaced}\n`);
}

function usableText(key: KeyView): string {
  return key.usable ? 'yes' : `no (${key.unusableReason})`;
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function fail(io: CliIo, message: string): void {
  io.stderr.write(`${message}\n`);
  io.setExitCode(1);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
