/** `lacre inbox serve|user|token|purge|import-soledad`: the Incoming Box server and its administration. */
import type { Command } from 'commander';
import { BoxUserError, BoxUserStore, type BoxTokenEntry, type TokenSelector } from '../box/users.js';
import type { CliContext } from './context.js';
import { openCommandDatabase as open } from './database.js';
import { waitForSignal } from './signal.js';

/** Registers `inbox` and its subcommands; returns the `inbox` command so others (e.g. `inbox fetch`) can join it. */
export function registerInboxCommands(program: Command, context: CliContext): Command {
  const inbox = program.command('inbox').description('the Incoming Box: serve it, manage its users, tokens and purge');

  inbox
    .command('serve')
    .description('run the Incoming Box HTTP server (incoming_box.listen); stops cleanly on SIGTERM')
    .action(async (_options: unknown, command: Command) => {
      // A service, like lacre serve: it may create its database.
      const { config, db, logger } = await open(context, command, 'stdout', { create: true });
      try {
        // Loaded here, not at the top: the other lacre commands start without the HTTP stack.
        const { startIncomingBoxServer } = await import('../box/server.js');
        const server = await startIncomingBoxServer(config, db, logger);
        await waitForSignal(['SIGTERM', 'SIGINT']);
        logger.info('incoming box shutting down');
        await server.close();
      } finally {
        await db.close();
      }
    });

  const user = inbox.command('user').description('map addresses to box users');
  user
    .command('add')
    .description('map an address to a user (a new one unless --user names one: aliases share a user); prints the user id')
    .argument('<address>')
    .option('--user <uuid>', 'the existing (or chosen) user id')
    .action((address: string, options: { user?: string }, command: Command) =>
      withUsers(context, command, async (users) => {
        const { user: id } = await users.add(address, options.user?.toLowerCase());
        process.stdout.write(`${id}\n`);
      }),
    );
  user
    .command('list')
    .description('list addresses and their users')
    .option('--json', 'machine-readable output')
    .action((options: { json?: boolean }, command: Command) =>
      withUsers(context, command, async (users) => {
        const entries = await users.list();
        if (options.json) process.stdout.write(`${JSON.stringify(entries.map((e) => ({ email: e.email, user: e.user, created_at: e.createdAt.toISOString() })))}\n`);
        else for (const entry of entries) process.stdout.write(`${entry.user}  ${entry.email}\n`);
      }),
    );
  user
    .command('delete')
    .description('remove an address mapping (the user keeps its blobs and tokens)')
    .argument('<address>')
    .action((address: string, _options: unknown, command: Command) =>
      withUsers(context, command, async (users) => {
        if ((await users.delete(address)) === 0) {
          process.stderr.write(`lacre: no box user has the address ${address}\n`);
          process.exitCode = 1;
          return;
        }
        process.stdout.write(`deleted ${address}\n`);
      }),
    );

  const token = inbox.command('token').description('user tokens for /blobs/{user}/');
  token
    .command('create')
    .description('create a token for a user (by id or address) and print it; only its hash is stored')
    .argument('<user>')
    .action((target: string, _options: unknown, command: Command) =>
      withUsers(context, command, async (users) => {
        const { token: created } = await users.createToken(target);
        process.stdout.write(`${created}\n`);
      }),
    );
  token
    .command('list')
    .description("list a user's tokens (by id or address): an id (the start of the token's SHA-256, not the token) and when it was made")
    .argument('<user>')
    .option('--json', 'machine-readable output')
    .action((target: string, options: { json?: boolean }, command: Command) =>
      withUsers(context, command, async (users) => {
        const { tokens } = await users.listTokens(target);
        if (options.json) process.stdout.write(`${JSON.stringify(tokens.map(tokenJson))}\n`);
        else for (const entry of tokens) process.stdout.write(`${entry.id}  ${entry.createdAt.toISOString()}\n`);
      }),
    );
  token
    .command('revoke')
    .description('revoke one token of a user, named by its id (from token list), a longer hash prefix, or the token itself ("-": read from stdin); or --all')
    .argument('<user>')
    .argument('[token]', 'token id, hash prefix, token, or - to read one line from stdin')
    .option('--all', 'revoke every token of the user')
    .action(async (target: string, reference: string | undefined, options: { all?: boolean }, command: Command) => {
      const selector = await tokenSelector(reference, options.all === true);
      await withUsers(context, command, async (users) => {
        const { tokens, releasedBlobs } = await users.revokeTokens(target, selector);
        if (tokens.length === 0) process.stdout.write('no tokens to revoke\n');
        for (const entry of tokens) process.stdout.write(`revoked ${entry.id}  ${entry.createdAt.toISOString()}\n`);
        if (releasedBlobs > 0) process.stdout.write(`released ${releasedBlobs} blob${releasedBlobs === 1 ? '' : 's'} it had reserved\n`);
      });
    });

  inbox
    .command('purge')
    .description('delete PROCESSED and permanently FAILED blobs older than incoming_box.retention_hours (once)')
    .action(async (_options: unknown, command: Command) => {
      const { config, db } = await open(context, command, 'stderr');
      try {
        const { purgeIncomingBox } = await import('../box/server.js');
        const removed = await purgeIncomingBox(config, db);
        process.stdout.write(`purged ${removed} blob${removed === 1 ? '' : 's'}\n`);
      } finally {
        await db.close();
      }
    });

  inbox
    .command('import-soledad')
    .description("bring a Soledad server's blob directory (e.g. /var/lib/soledad/blobs) into this box; run it with the box stopped")
    .argument('<dir>', "Soledad's blobs_path")
    .action(async (dir: string, _options: unknown, command: Command) => {
      const { config, db } = await open(context, command, 'stderr');
      try {
        const { importSoledadBlobs } = await import('../box/import-soledad.js');
        const summary = await importSoledadBlobs(config, db, dir);
        process.stdout.write(`imported ${summary.imported}, already here ${summary.present}, deleted in Soledad ${summary.tombstones}\n`);
        for (const user of summary.skippedUsers) process.stderr.write(`skipped ${user}: a user id is a lower-case UUID, 8-4-4-4-12 or LEAP's 32 digits\n`);
        for (const file of summary.skippedFiles) process.stderr.write(`skipped ${file}\n`);
        for (const user of summary.usersWithoutAccess) {
          process.stderr.write(`user ${user} has no address or token here: lacre inbox user add ADDRESS --user ${user}; lacre inbox token create ${user}\n`);
        }
        if (summary.skippedUsers.length + summary.skippedFiles.length > 0) process.exitCode = 1;
      } finally {
        await db.close();
      }
    });

  return inbox;
}

async function withUsers(context: CliContext, command: Command, use: (users: BoxUserStore) => Promise<void>): Promise<void> {
  const { config, db } = await open(context, command, 'stderr');
  try {
    await use(new BoxUserStore(db, config.keys));
  } finally {
    await db.close();
  }
}

function tokenJson(entry: BoxTokenEntry): { id: string; created_at: string } {
  return { id: entry.id, created_at: entry.createdAt.toISOString() };
}

/** One token named, or --all; "-" reads it from stdin, so the token need not show in the process list or history. */
async function tokenSelector(reference: string | undefined, all: boolean): Promise<TokenSelector> {
  if (all === (reference !== undefined)) throw new BoxUserError('name one token (its id from lacre inbox token list, or the token), or give --all');
  if (all) return { all: true };
  const named = reference === '-' ? await firstLineOfStdin() : reference!;
  if (named === '') throw new BoxUserError('no token on stdin');
  return { reference: named };
}

/**
 * The first line piped in: a terminal would echo the token as it is typed, so "-" on a terminal is refused. Reading
 * stops at the first newline (the rest is never read), or at 4 KiB.
 */
async function firstLineOfStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new BoxUserError('"-" reads the token from a pipe (e.g. printf %s "$TOKEN" | lacre inbox token revoke USER -), not from a terminal');
  let text = '';
  for await (const chunk of process.stdin) {
    text += (chunk as Buffer).toString('utf8');
    if (/\r?\n/.test(text) || text.length > 4096) break;
  }
  process.stdin.destroy();
  return (text.split(/\r?\n/)[0] ?? '').trim();
}
