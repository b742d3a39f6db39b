import type { Command } from 'commander';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { FilterOutcome } from '../filter/filter.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../filter/ports.js';
import { errorReply, exitCodeFor, replyText, type SmtpReply } from '../filter/reply.js';
import { errorMessage } from '../errors.js';
import type { RoutedRecipient } from '../filter/plan.js';
import { openRuntime, type Runtime } from '../runtime.js';
import type { CliContext } from './context.js';
import { announceDatabase, createFrom, describeDatabase } from './database.js';

export function registerMessageCommands(program: Command, context: CliContext): void {
  program
    .command('encrypt')
    .description('run one message (stdin) through the filter and write what the recipients would receive')
    .requiredOption('--from <address>', 'envelope sender')
    .requiredOption('--to <address>', 'envelope recipient (repeat for more)', collect, [] as string[])
    .option('--output-dir <dir>', 'write one file per copy into DIR instead of stdout')
    .action(async (options: { from: string; to: string[]; outputDir?: string }, command: Command) => {
      const config = context.configFrom(command);
      const logger = context.createConfiguredLogger(config.log, 'stderr');
      const sink = options.outputDir ? new DirectorySink(options.outputDir) : new StdoutSink(options.to.length > 1);
      announceDatabase(config.database);
      const outcome = await runOne(config, logger, options.from, options.to, createFrom(command), (runtime) => runtime.filterTo(sink));
      if (outcome.reply.code >= 400) fail(outcome.reply);
    });

  program
    .command('pipe')
    .description("Postfix pipe(8) mode: filter stdin and reinject it; exit 0, or 75 to have Postfix retry")
    .requiredOption('-f, --from <address>', 'envelope sender (${sender})')
    .argument('<recipients...>', 'envelope recipients (${recipient})')
    .action(async (recipients: string[], options: { from: string }, command: Command) => {
      let config: Config;
      try {
        config = context.configFrom(command);
      } catch {
        // The admin's mistake, not the message's: defer (Postfix keeps it queued), never bounce. The detail
        // stays out of the delivery status, which can reach the sender; `lacre check` shows it.
        process.stdout.write('4.3.5 lacre configuration error, see lacre check\n');
        process.exitCode = 75;
        return;
      }
      const logger = context.createConfiguredLogger(config.log, 'none');
      // Not on stderr: pipe(8) puts stdout and stderr alike into the delivery status, which can reach the sender.
      logger.debug({ database: describeDatabase(config.database) }, 'using database');
      const outcome = await runOne(config, logger, options.from, recipients, createFrom(command), (runtime) => runtime.filter, purgeSomeCopies).catch(
        (error: unknown): Pick<FilterOutcome, 'reply'> => {
          logger.error({ err: error }, 'pipe: could not process the message');
          return { reply: errorReply(error) };
        },
      );
      // pipe(8) puts what we print into the delivery status: only the enhanced code and text, first on the line.
      if (outcome.reply.code >= 400) {
        process.stdout.write(`${replyText(outcome.reply)}\n`);
        process.exitCode = exitCodeFor(outcome.reply);
      }
    });
}

async function runOne(
  config: Config,
  logger: Logger,
  from: string,
  to: string[],
  createDatabase: boolean,
  filterOf: (runtime: Runtime) => Runtime['filter'],
  afterMessage?: (runtime: Runtime, logger: Logger) => Promise<void>,
): Promise<Pick<FilterOutcome, 'reply'>> {
  const runtime = await openRuntime(config, logger, { createDatabase });
  try {
    const filter = filterOf(runtime);
    const recipients: RoutedRecipient[] = [];
    for (const address of to) {
      try {
        recipients.push(await filter.lookupRecipient(address));
      } catch (error) {
        process.stdin.resume();
        return { reply: errorReply(error) };
      }
    }
    let bytes = 0;
    const body = process.stdin.pipe(new PassThrough()).on('data', (chunk: Buffer) => (bytes += chunk.length));
    const log = logger.child({ mode: 'cli' });
    // One exit code (pipe) or one outcome (encrypt) for the whole message.
    const outcome = await filter.process({ from, recipients, body, use8BitMime: true, bytesRead: () => bytes, log, perRecipientReplies: false });
    await afterMessage?.(runtime, logger);
    return outcome;
  } finally {
    await runtime.close();
  }
}

/**
 * Expired copies a pipe(8) run forgets after its message: no lacre serve runs to purge the delivery ledger hourly
 * on a pipe-only site, and this many per message outpaces what messages of fewer recipients add.
 */
export const PIPE_PURGE_PER_MESSAGE = 200;

async function purgeSomeCopies(runtime: Runtime, logger: Logger): Promise<void> {
  if (!runtime.ledger) return;
  await runtime.ledger.purgeSome(runtime.config.relay.delivered_retention_hours, PIPE_PURGE_PER_MESSAGE).catch((error: unknown) => {
    logger.warn({ error: errorMessage(error) }, 'delivery ledger purge failed, trying again with the next message');
  });
}

function fail(reply: SmtpReply): void {
  process.stderr.write(`lacre: ${reply.code} ${replyText(reply)}\n`);
  process.exitCode = exitCodeFor(reply);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Writes copies one after another; the plain copy streams first, encrypted ones follow. */
abstract class SerialSink implements Downstream {
  private queue: Promise<unknown> = Promise.resolve();

  send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    const turn = this.queue.then(() => this.write(envelope, raw));
    this.queue = turn.catch(() => undefined);
    return turn.then(() => new Map());
  }

  protected abstract write(envelope: OutboundEnvelope, raw: Readable): Promise<void>;
}

/** One copy: the message itself. Several: an mboxrd stream, one message per copy. */
class StdoutSink extends SerialSink {
  constructor(private readonly mbox: boolean) {
    super();
  }

  protected async write(envelope: OutboundEnvelope, raw: Readable): Promise<void> {
    if (!this.mbox) return pipeline(raw, keepOpen(process.stdout));
    process.stdout.write(`From ${envelope.from || 'MAILER-DAEMON'} ${new Date().toUTCString()}\n`);
    await pipeline(raw, mboxrdQuote(), keepOpen(process.stdout));
    process.stdout.write('\n');
  }
}

class DirectorySink extends SerialSink {
  private count = 0;

  constructor(private readonly dir: string) {
    super();
  }

  protected async write(envelope: OutboundEnvelope, raw: Readable): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const name = `${++this.count}-${envelope.to.join(',').replace(/[^A-Za-z0-9@._,+-]/g, '_')}.eml`;
    await pipeline(raw, createWriteStream(join(this.dir, name)));
  }
}

function keepOpen(stream: NodeJS.WritableStream): Writable {
  const pass = new PassThrough();
  pass.on('data', (chunk: Buffer) => {
    if (!stream.write(chunk)) {
      pass.pause();
      stream.once('drain', () => pass.resume());
    }
  });
  return pass;
}

/** mboxrd: ">From " quoting of lines that start with ">*From ". Carries the unfinished line across chunks. */
function mboxrdQuote(): Transform {
  let carry = '';
  const quote = (text: string) => Buffer.from(text.replace(/^(>*From )/gm, '>$1'), 'latin1');
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const text = carry + chunk.toString('latin1');
      const end = text.lastIndexOf('\n') + 1;
      carry = text.slice(end);
      done(null, quote(text.slice(0, end)));
    },
    flush(done) {
      done(null, quote(carry));
    },
  });
}
