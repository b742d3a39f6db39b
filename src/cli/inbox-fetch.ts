import { InvalidArgumentError, type Command } from 'commander';
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { PrivateKey } from 'openpgp';
import { IncomingBoxClient, IncomingBoxHttpError, IncomingBoxUnreachableError } from '../box-client/client.js';
import { PermanentProcessingError, processIncoming, type BlobOutcome, type ProcessSummary } from '../box-client/consumer.js';
import { loadDecryptionKeys, NoMatchingKeyError, openBlob } from '../box-client/decrypt.js';
import { deliverToMaildir } from '../box-client/maildir.js';
import type { CliContext } from './context.js';
import { errorMessage } from '../errors.js';
import { INCOMING_NAMESPACE, incomingNamespace } from '../config/schema.js';

/** sysexits: EX_TEMPFAIL, "try again later". */
export const EXIT_TEMPFAIL = 75;

export interface InboxFetchOptions {
  url: string;
  user: string;
  /** Falls back to $LACRE_INBOX_TOKEN so the token need not appear in the process list. */
  token?: string;
  key: string;
  passphraseFile?: string;
  maildir: string;
  namespace: string;
  concurrency: number;
  limit?: number;
  sizeLimit?: number;
  timeoutSeconds?: number;
}

export interface InboxFetchIo {
  env: NodeJS.ProcessEnv;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  signal?: AbortSignal;
}

/** Adds `fetch` to the `inbox` command (src/cli/inbox.ts creates that one). */
export function registerInboxFetchCommand(inboxCommand: Command, _context: CliContext): void {
  inboxCommand
    .command('fetch')
    .description("decrypt the pending messages of a user's Incoming Box into a Maildir, then mark them PROCESSED")
    .requiredOption('--url <url>', 'base URL of the box, e.g. http://127.0.0.1:9025')
    .requiredOption('--user <uuid>', "the box's user id")
    .option('--token <token>', 'user token (default: $LACRE_INBOX_TOKEN)')
    .requiredOption('--key <file>', 'armored secret key(s) of the user')
    .option('--passphrase-file <file>', 'file holding the passphrase of a protected key (first line)')
    .requiredOption('--maildir <dir>', 'Maildir to deliver into (created if missing)')
    .option('--namespace <ns>', 'box namespace (mx, the old spelling, means MX)', INCOMING_NAMESPACE)
    .option('--concurrency <n>', 'messages processed at once', positiveInteger, 4)
    .option('--limit <n>', 'process at most N messages', positiveInteger)
    .option('--size-limit <bytes>', 'leave messages bigger than this for later', positiveInteger)
    .option('--timeout-seconds <s>', 'give up on a box that does not answer for this long', positiveInteger, 60)
    .action(async (options: InboxFetchOptions) => {
      const controller = new AbortController();
      const stop = () => controller.abort();
      process.once('SIGINT', stop).once('SIGTERM', stop);
      try {
        process.exitCode = await runInboxFetch(options, { env: process.env, stdout: process.stdout, stderr: process.stderr, signal: controller.signal });
      } finally {
        process.off('SIGINT', stop).off('SIGTERM', stop);
      }
    });
}

/**
 * Drains the box into the Maildir. Resolves with the exit code: 0 all delivered, 1 some marked FAILED (or a
 * usage / credential problem), 75 the box unreachable or some messages left for a later run.
 */
export async function runInboxFetch(options: InboxFetchOptions, io: InboxFetchIo): Promise<number> {
  const token = options.token ?? io.env.LACRE_INBOX_TOKEN;
  if (!token) return usageError(io, 'no token: give --token or set LACRE_INBOX_TOKEN');
  let keys: PrivateKey[];
  try {
    keys = await loadDecryptionKeys(await readFile(options.key, 'utf8'), await readPassphrase(options.passphraseFile));
  } catch (error) {
    return usageError(io, errorMessage(error));
  }

  const client = new IncomingBoxClient({
    url: options.url,
    user: options.user,
    token,
    namespace: incomingNamespace(options.namespace),
    timeoutMs: (options.timeoutSeconds ?? 60) * 1000,
  });
  const deliver = async (_id: string, stream: Readable, meta: { scheme: string }) => {
    try {
      await deliverToMaildir(options.maildir, await openBlob(stream, meta.scheme, keys));
    } catch (error) {
      throw asProcessingOutcome(error);
    }
  };
  let summary: ProcessSummary;
  try {
    summary = await processIncoming(client, deliver, {
      concurrency: options.concurrency,
      limit: options.limit,
      sizeLimit: options.sizeLimit,
      signal: io.signal,
      onOutcome: (outcome) => reportOutcome(io, outcome),
    });
  } catch (error) {
    io.stderr.write(`lacre: inbox fetch: ${errorMessage(error)}\n`);
    return boxTroubleIsTemporary(error) ? EXIT_TEMPFAIL : 1;
  }
  io.stdout.write(
    `processed ${summary.processed}, failed ${summary.failed}, skipped ${summary.skipped} (held by another client), ` +
      `left for later ${summary.deferred}\n`,
  );
  if (summary.failed > 0) return 1;
  return summary.deferred > 0 ? EXIT_TEMPFAIL : 0;
}

function reportOutcome(io: InboxFetchIo, outcome: BlobOutcome): void {
  if (outcome.outcome === 'failed') {
    const kind = outcome.permanent ? 'permanently' : 'temporarily';
    io.stderr.write(`lacre: blob ${outcome.id}: marked FAILED ${kind}: ${errorMessage(outcome.error)}\n`);
  } else if (outcome.outcome === 'deferred') {
    io.stderr.write(`lacre: blob ${outcome.id}: left for a later run: ${errorMessage(outcome.error)}\n`);
  }
}

/** A blob none of our keys can open, and no later version of this client could: failed for good. */
function asProcessingOutcome(error: unknown): unknown {
  return error instanceof NoMatchingKeyError ? new PermanentProcessingError(error.message, { cause: error }) : error;
}

/** Unreachable, timeouts and 5xx are worth retrying; 4xx (bad credentials, bad request) need a person. */
function boxTroubleIsTemporary(error: unknown): boolean {
  if (error instanceof IncomingBoxUnreachableError) return true;
  return error instanceof IncomingBoxHttpError && error.status >= 500;
}

async function readPassphrase(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  const text = await readFile(file, 'utf8');
  return text.split(/\r?\n/, 1)[0]!;
}

function usageError(io: InboxFetchIo, message: string): number {
  io.stderr.write(`lacre: inbox fetch: ${message}\n`);
  return 1;
}

function positiveInteger(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new InvalidArgumentError(`expected a positive whole number, got "${value}"`);
  return number;
}
