import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Command } from 'commander';
import { registerKeysCommands, type CliIo } from '../../src/cli/keys.js';
import { configSchema } from '../../src/config/schema.js';
import { openDatabase, type DatabaseConfig } from '../../src/db/open.js';
import { createLogger } from '../../src/log/logger.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { leaveStaleSocket } from '../helpers/stale-socket.js';
import { startAdminSocket } from '../../src/admin/server.js';
import { createGpgHome, generateKey, gpgOk, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';

interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

let home: GpgHome;
let files: string;
let alice: GpgKey;
let bob: GpgKey;
let signOnly: GpgKey;
let carol: GpgKey;
let carolRevoked: string;

before(async () => {
  home = await createGpgHome();
  files = await mkdtemp(join(tmpdir(), 'lacre-keys-cli-'));
  alice = await generateKey(home, { email: 'Alice@example.org' });
  bob = await generateKey(home, { email: 'bob@example.org', algo: 'rsa3072' });
  signOnly = await generateKey(home, { email: 'signer@example.org', signOnly: true });
  await writeFile(join(files, 'alice.asc'), alice.publicArmored);
  await writeFile(join(files, 'mixed.asc'), bob.publicArmored + signOnly.publicArmored);
  await writeFile(join(files, 'alice.gpg'), await gpgOk(home, ['--export', alice.fingerprint]));
  await writeFile(join(files, 'empty.asc'), '');
  carol = await generateKey(home, { email: 'carol@example.org' });
  carolRevoked = await revokeKey(home, carol);
});
after(async () => {
  await home.remove();
  await rm(files, { recursive: true, force: true });
});

/**
 * Runs `lacre keys ...` in-process against the database described by `database`, capturing its output; through
 * the admin socket at `socket` when a service answers there.
 */
async function runKeys(database: DatabaseConfig, args: string[], stdin: string | Readable = '', socket = ''): Promise<RunResult> {
  const out: string[] = [];
  const err: string[] = [];
  let exitCode = 0;
  const sink = (into: string[]) => new Writable({ write: (chunk, _encoding, done) => (into.push(String(chunk)), done()) });
  const input = typeof stdin === 'string' ? Readable.from([Buffer.from(stdin)]) : stdin;
  const io: CliIo = { stdin: input, stdout: sink(out), stderr: sink(err), setExitCode: (code) => (exitCode = code) };
  const config = configSchema.parse({ database, admin: { socket } });
  const program = new Command('lacre').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerKeysCommands(program, { configFrom: () => config, openDatabase: async () => ({ config, db: await openDatabase(config.database), logger: createLogger('silent') }) }, io);
  await program.parseAsync(['keys', ...args], { from: 'user' });
  return { stdout: out.join(''), stderr: err.join(''), exitCode };
}

for (const backend of await databaseBackends()) {
  describe(`lacre keys (${backend.name})`, () => {
    it('imports from files and stdin, lists, shows and deletes', () =>
      withDatabase(backend, async (db, database) => {
        await db.close(); // the embedded data dir opens in one place at a time; each command opens its own

        const imported = await runKeys(database, ['import', join(files, 'alice.asc'), join(files, 'mixed.asc')]);
        assert.equal(imported.exitCode, 1, 'one key of mixed.asc is refused');
        assert.match(imported.stdout, new RegExp(`^imported ${alice.fingerprint} for Alice@example.org \\(expires \\d{4}-`, 'm'));
        assert.match(imported.stdout, new RegExp(`^imported ${bob.fingerprint} for bob@example.org`, 'm'));
        assert.match(imported.stderr, new RegExp(`^refused .*mixed.asc key ${signOnly.fingerprint}: .*no usable encryption`, 'm'));

        const piped = await runKeys(database, ['import', '-', '--email', 'Team@Example.org', '--email', 'ops@example.org', '--style', 'inline'], alice.publicArmored);
        assert.equal(piped.exitCode, 0, piped.stderr);
        assert.match(piped.stdout, new RegExp(`^imported ${alice.fingerprint} for Team@example.org, ops@example.org`, 'm'));

        const listed = await runKeys(database, ['list', '--json']);
        const rows = JSON.parse(listed.stdout) as { email: string; fingerprint: string; style: string; status: string }[];
        assert.deepEqual(
          rows.map((row) => [row.email, row.fingerprint, row.style, row.status]),
          [
            ['Alice@example.org', alice.fingerprint, 'mime', 'confirmed'],
            ['bob@example.org', bob.fingerprint, 'mime', 'confirmed'],
            ['ops@example.org', alice.fingerprint, 'inline', 'confirmed'],
            ['Team@example.org', alice.fingerprint, 'inline', 'confirmed'],
          ],
        );
        const table = await runKeys(database, ['list']);
        assert.match(table.stdout, /^ADDRESS\s+STYLE\s+STATUS\s+FINGERPRINT\s+EXPIRES\s+USABLE$/m);
        assert.match(table.stdout, new RegExp(`^bob@example.org\\s+mime\\s+confirmed\\s+${bob.fingerprint}\\s+\\d{4}-\\d\\d-\\d\\d\\s+yes$`, 'm'));

        const shown = await runKeys(database, ['show', 'ALICE@EXAMPLE.ORG']);
        assert.equal(shown.exitCode, 0);
        assert.match(shown.stdout, new RegExp(`^Alice@example.org  ${alice.fingerprint}$`, 'm'));
        assert.match(shown.stdout, /usable:\s+yes/);
        assert.match(shown.stdout, /user ID:\s+Alice <Alice@example.org>/);

        const missing = await runKeys(database, ['show', 'nobody@example.org']);
        assert.equal(missing.exitCode, 1);
        assert.match(missing.stderr, /no keys for nobody@example.org/);
        const invalid = await runKeys(database, ['show', 'not-an-address']);
        assert.equal(invalid.exitCode, 1);
        assert.match(invalid.stderr, /not an address/);

        const deleted = await runKeys(database, ['delete', alice.fingerprint]);
        assert.equal(deleted.stdout, 'deleted 3 keys\n');
        const deletedBob = await runKeys(database, ['delete', 'BOB@example.org']);
        assert.equal(deletedBob.stdout, 'deleted 1 key\n');
        const nothing = await runKeys(database, ['delete', 'bob@example.org']);
        assert.equal(nothing.exitCode, 1);
        assert.match(nothing.stderr, /no key matches bob@example.org/);
        assert.equal((await runKeys(database, ['list'])).stdout, 'no keys stored\n');
      }));

    it('prints the same, with the same exit codes, through the admin socket as on the database', () =>
      withDatabase(backend, async (directDb, direct) => {
        await directDb.close();
        await withDatabase(backend, async (servedDb, served) => {
          const socket = join(files, `admin-${backend.name}.sock`);
          const config = configSchema.parse({ database: served, admin: { socket } });
          const admin = (await startAdminSocket(config, servedDb, createLogger('silent')))!;
          try {
            const script: [string[], string?][] = [
              [['import', join(files, 'alice.asc'), join(files, 'mixed.asc')]],
              [['import', '-', '--email', 'Team@Example.org', '--style', 'inline', '--status', 'pending'], alice.publicArmored],
              [['import', join(files, 'alice.gpg'), join(files, 'empty.asc')]],
              [['import', '-'], 'not a key'],
              [['list']],
              [['list', '--json']],
              [['pending']],
              [['pending', '--json']],
              [['show', 'ALICE@EXAMPLE.ORG']],
              [['show', 'alice@example.org', '--json']],
              [['show', 'nobody@example.org']],
              [['show', 'not-an-address']],
              [['disable', 'alice@example.org']],
              [['disable', 'alice@example.org']],
              [['restore', alice.fingerprint, '--email', 'Alice@example.org']],
              [['restore', alice.fingerprint]],
              [['restore', 'not-a-fingerprint']],
              [['disable', bob.fingerprint]],
              [['list']],
              [['remove', 'bob@example.org']],
              [['delete', alice.fingerprint]],
              [['delete', alice.fingerprint]],
              [['pending']],
            ];
            for (const [args, stdin] of script) {
              const onDatabase = await runKeys(direct, args, stdin);
              const onSocket = await runKeys(served, args, stdin, socket);
              assert.match(onSocket.stderr, /^using the running lacre serve \(admin socket .*\)$/m, args.join(' '));
              const same = (result: RunResult) => ({
                exitCode: result.exitCode,
                stdout: withoutTimes(result.stdout),
                stderr: result.stderr.replace(/^using the running lacre serve .*\n/m, ''),
              });
              assert.deepEqual(same(onSocket), same(onDatabase), args.join(' '));
            }
          } finally {
            await admin.close();
          }
        });
      }));

    it('falls back to the database when no service answers on admin.socket (no file, or a stale one)', () =>
      withDatabase(backend, async (db, database) => {
        await db.close();
        const missing = await runKeys(database, ['import', join(files, 'alice.asc')], '', join(files, 'nobody-here.sock'));
        assert.equal(missing.exitCode, 0, missing.stderr);
        assert.doesNotMatch(missing.stderr, /admin socket/);
        const stale = join(files, `stale-${backend.name}.sock`);
        await leaveStaleSocket(stale);
        const listed = await runKeys(database, ['list', '--json'], '', stale);
        assert.equal(listed.exitCode, 0, listed.stderr);
        assert.doesNotMatch(listed.stderr, /admin socket/);
        assert.deepEqual((JSON.parse(listed.stdout) as { email: string }[]).map((row) => row.email), ['Alice@example.org']);
      }));

    it('lists whether each key can encrypt now and why not, in text and JSON (list and show)', () =>
      withDatabase(backend, async (db, database) => {
        await db.close();
        assert.equal((await runKeys(database, ['import', '-'], carol.publicArmored + bob.publicArmored)).exitCode, 0);
        const revoked = await runKeys(database, ['import', '-'], carolRevoked);
        assert.match(revoked.stdout, /is revoked; it will no longer be used/);

        const table = await runKeys(database, ['list']);
        assert.match(table.stdout, new RegExp(`^carol@example.org\\s+mime\\s+confirmed\\s+${carol.fingerprint}\\s+\\S+\\s+no \\(is revoked\\)$`, 'm'));
        assert.match(table.stdout, new RegExp(`^bob@example.org\\s+.*\\s+yes$`, 'm'));
        const listed = JSON.parse((await runKeys(database, ['list', '--json'])).stdout) as { email: string; usable: boolean; unusableReason: string | null }[];
        assert.deepEqual(
          listed.map((row) => [row.email, row.usable, row.unusableReason]),
          [
            ['bob@example.org', true, null],
            ['carol@example.org', false, 'is revoked'],
          ],
        );
        const shown = JSON.parse((await runKeys(database, ['show', 'carol@example.org', '--json'])).stdout) as { usable: boolean; unusableReason: string }[];
        assert.deepEqual(shown.map((key) => [key.usable, key.unusableReason]), [[false, 'is revoked']]);
        assert.match((await runKeys(database, ['show', 'carol@example.org'])).stdout, /^ {2}usable: {3}no \(is revoked\)$/m);
      }));

    it('explains empty input, imports binary keys, and refuses an oversized stream without reading it all', () =>
      withDatabase(backend, async (db, database) => {
        await db.close();
        const empty = await runKeys(database, ['import', '-'], '');
        assert.equal(empty.exitCode, 1);
        assert.equal(empty.stderr, 'refused stdin: no key on standard input\n');
        const emptyFile = await runKeys(database, ['import', join(files, 'empty.asc')]);
        assert.match(emptyFile.stderr, /^refused .*empty\.asc: the file is empty$/m);

        const binary = await runKeys(database, ['import', join(files, 'alice.gpg')]);
        assert.equal(binary.exitCode, 0, binary.stderr);
        assert.match(binary.stdout, new RegExp(`^imported ${alice.fingerprint} for Alice@example.org`, 'm'));

        let pulled = 0;
        const fiftyMegabytes = Readable.from(
          (function* () {
            for (let chunk = 0; chunk < 800; chunk++) {
              pulled += 64 * 1024;
              yield Buffer.alloc(64 * 1024, 'A');
            }
          })(),
        );
        const huge = await runKeys(database, ['import', '-'], fiftyMegabytes);
        assert.equal(huge.exitCode, 1);
        assert.equal(huge.stderr, 'refused stdin: larger than keys.max_key_bytes (1 MiB); nothing was imported\n');
        assert.ok(pulled < 4 * 1024 * 1024, `read ${pulled} bytes of 50 MiB`);
      }));
  });
}

/** Import and update times differ between two databases; everything else must not. */
function withoutTimes(text: string): string {
  return text.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, '<time>');
}
