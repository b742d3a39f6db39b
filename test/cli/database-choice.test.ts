/**
 * Which database a command uses: every command that touches keys names it on stderr (never stdout; for
 * `lacre pipe` only in its log), and only serve and migrate create a new embedded database unless --create.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { corpus } from '../helpers/corpus.js';
import { createGpgHome, generateKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { runLacre } from '../helpers/lacre.js';
import { databaseBackends, databaseEnv, openTestDatabase } from '../helpers/databases.js';

/** No LACRE_ variable of the test runner's own leaks into the children. */
const cleanEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.keys(process.env).filter((name) => name.startsWith('LACRE_')).map((name) => [name, '']));

describe('the database a command uses', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let dir: string;
  let keyFile: string;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    dir = await mkdtemp(join(tmpdir(), 'lacre-dbchoice-'));
    keyFile = join(dir, 'alice.asc');
    await writeFile(keyFile, alice.publicArmored);
  });
  after(async () => {
    await home.remove();
    await rm(dir, { recursive: true, force: true });
  });

  /** A fresh, empty working directory: where an admin runs a command by mistake. */
  async function emptyDir(name: string): Promise<string> {
    const path = join(dir, name);
    await mkdir(path);
    return path;
  }

  it('keys import in the wrong directory creates nothing and says how to reach the right database', async () => {
    const cwd = await emptyDir('wrong');
    const result = await runLacre(['keys', 'import', keyFile], cleanEnv, undefined, cwd);
    assert.equal(result.code, 1);
    assert.equal(result.stdout.toString(), '', 'nothing "imported"');
    assert.match(result.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));
    assert.match(result.stderr, new RegExp(`no embedded database in ${cwd}/data .*--config.*--create`));
    assert.equal(existsSync(join(cwd, 'data')), false);
  });

  it('every other command that would create one refuses too; serve and migrate create it', async () => {
    const cwd = await emptyDir('others');
    const refusals = [
      ['keys', 'list'],
      ['keys', 'show', 'alice@example.test'],
      ['keys', 'delete', 'alice@example.test'],
      ['encrypt', '--from', 'a@example.test', '--to', 'alice@example.test'],
      ['inbox', 'user', 'list'],
      ['inbox', 'token', 'create', 'alice@example.test'],
      ['inbox', 'purge'],
    ];
    for (const args of refusals) {
      const result = await runLacre(args, cleanEnv, corpus[0]!.raw, cwd);
      assert.equal(result.code, 1, args.join(' '));
      assert.match(result.stderr, /no embedded database in .*--create/, args.join(' '));
      assert.equal(existsSync(join(cwd, 'data')), false, args.join(' '));
    }
    const check = await runLacre(['check'], { ...cleanEnv, LACRE_RELAY_PORT: '1' }, undefined, cwd);
    assert.equal(check.code, 1);
    assert.match(check.stdout.toString(), /^FAILED {2}database .*no embedded database in /m);
    assert.equal(existsSync(join(cwd, 'data')), false, 'check');

    const migrated = await runLacre(['migrate'], cleanEnv, undefined, cwd);
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.match(migrated.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));
    assert.ok(existsSync(join(cwd, 'data', 'PG_VERSION')));
  });

  it('pipe defers (75) rather than create one, and names no database where pipe(8) would quote it', async () => {
    const cwd = await emptyDir('pipe');
    const logFile = join(dir, 'pipe.log');
    const env = { ...cleanEnv, LACRE_LOG_FILE: logFile, LACRE_LOG_LEVEL: 'debug' };
    const result = await runLacre(['pipe', '-f', 'a@example.test', '--', 'alice@example.test'], env, corpus[0]!.raw, cwd);
    assert.equal(result.code, 75);
    assert.match(result.stdout.toString(), /^4\.3\.0 /);
    assert.doesNotMatch(result.stdout.toString() + result.stderr, /using|data/);
    assert.equal(existsSync(join(cwd, 'data')), false);
    const log = await readFile(logFile, 'utf8');
    assert.match(log, new RegExp(`"database":"embedded database ${cwd}/data".*"msg":"using database"`));
    assert.match(log, /no embedded database in /);
  });

  it('with --create, keys import makes the database; later commands use it and name it on stderr only', async () => {
    const cwd = await emptyDir('created');
    const imported = await runLacre(['keys', 'import', '--create', keyFile], cleanEnv, undefined, cwd);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout.toString(), new RegExp(`^imported ${alice.fingerprint} for alice@example.test`));
    assert.match(imported.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));

    const listed = await runLacre(['keys', 'list', '--json'], cleanEnv, undefined, cwd);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal((JSON.parse(listed.stdout.toString()) as unknown[]).length, 1, 'stdout is the data alone');
    assert.match(listed.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));

    const encrypted = await runLacre(['encrypt', '--from', 'a@example.test', '--to', 'alice@example.test'], cleanEnv, corpus[0]!.raw, cwd);
    assert.equal(encrypted.code, 0, encrypted.stderr);
    assert.doesNotMatch(encrypted.stdout.toString(), /using/);
    assert.match(encrypted.stdout.toString(), /multipart\/encrypted/);
    assert.match(encrypted.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));

    const users = await runLacre(['inbox', 'user', 'list'], cleanEnv, undefined, cwd);
    assert.equal(users.code, 0, users.stderr);
    assert.match(users.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));
    const check = await runLacre(['check'], { ...cleanEnv, LACRE_RELAY_PORT: '1' }, undefined, cwd);
    assert.match(check.stdout.toString(), /^ok {4}\s*database /m);
    assert.match(check.stderr, new RegExp(`^using embedded database ${cwd}/data$`, 'm'));
  });

  it('names a PostgreSQL database by its URL, password masked', async (t) => {
    const postgres = (await databaseBackends()).find((backend) => backend.name === 'postgres');
    if (!postgres) return t.skip('needs a PostgreSQL server');
    const database = await openTestDatabase(postgres);
    await database.db.close();
    try {
      const url = new URL(databaseEnv(database.config).LACRE_DATABASE_URL!);
      url.password = 'sesame';
      const listed = await runLacre(['keys', 'list'], { ...cleanEnv, LACRE_DATABASE_URL: url.toString() });
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stderr, new RegExp(`^using PostgreSQL database postgres://postgres:\\*{5}@127\\.0\\.0\\.1:\\d+/${url.pathname.slice(1)}$`, 'm'));
      assert.doesNotMatch(listed.stderr + listed.stdout.toString(), /sesame/);
    } finally {
      await database.cleanup();
    }
  });
});
