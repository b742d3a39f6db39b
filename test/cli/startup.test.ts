import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { databaseBackends, databaseEnv, openTestDatabase } from '../helpers/databases.js';

describe('start-up', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lacre-startup-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('runs with no configuration at all on the embedded database in ./data', async () => {
    const env = { ...process.env };
    for (const name of Object.keys(env)) if (name.startsWith('LACRE_')) delete env[name];
    // Only the port is moved off 10025 so the test cannot collide with a real filter on this machine.
    const server = await LacreServer.start({ ...env, LACRE_SMTP_LISTEN: '127.0.0.1:0' }, { cwd: dir });
    try {
      const ready = server.logs.find((line) => line.msg === 'lacre is ready')!;
      assert.equal(ready.database, 'embedded');
      assert.equal(ready.databaseLocation, `embedded database ${join(dir, 'data')}`);
      assert.equal(ready.relay, '127.0.0.1:10026');
      assert.ok((await stat(join(dir, 'data'))).isDirectory());
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('logs the configuration advice of lacre check at warn, and serves anyway', async () => {
    const server = await LacreServer.start({ LACRE_DATABASE_DATA_DIR: join(dir, 'data'), LACRE_RELAY_DELIVERED_RETENTION_HOURS: '24' });
    try {
      const advice = server.logs.filter((line) => line.setting === 'relay.delivered_retention_hours');
      assert.equal(advice.length, 1);
      assert.equal(advice[0]!.level, 'warn');
      assert.match(String(advice[0]!.msg), /shorter than Postfix's default maximal_queue_lifetime/);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('on SIGTERM closes the idle connections Postfix keeps open with a 421 and exits 0', async () => {
    const server = await LacreServer.start({ LACRE_DATABASE_DATA_DIR: join(dir, 'data') });
    const { client } = await RawSmtpClient.connect(server.port);
    assert.match(await client.command('EHLO postfix.example'), /^250/);
    const exited = server.stop();
    assert.match(await client.reply(), /^421 4\.3\.2 /);
    assert.equal(await exited, 0);
  });

  it('refuses to serve an unmigrated PostgreSQL database, naming the command to run', async (t) => {
    const postgres = (await databaseBackends()).find((backend) => backend.name === 'postgres');
    if (!postgres) return t.skip('needs a PostgreSQL server');
    const database = await openTestDatabase(postgres, { migrate: false });
    try {
      const result = await runLacre(['serve'], { ...databaseEnv(database.config), LACRE_SMTP_LISTEN: '127.0.0.1:0' });
      assert.equal(result.code, 1);
      assert.match(result.stderr, /not migrated.*lacre migrate/);
      const migrated = await runLacre(['migrate'], databaseEnv(database.config));
      assert.equal(migrated.code, 0, migrated.stderr);
      assert.match(migrated.stdout.toString(), /applied: 001_keys/);
      const again = await runLacre(['migrate', '--status'], databaseEnv(database.config));
      assert.match(again.stdout.toString(), /up to date/);
    } finally {
      await database.cleanup();
    }
  });

  it('when the SMTP port is taken, closes what it had started (web listener, admin socket) and exits 1', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    const socket = join(dir, 'taken', 'admin.sock');
    try {
      const result = await runLacre(['serve'], {
        LACRE_DATABASE_DATA_DIR: join(dir, 'taken'),
        LACRE_SMTP_LISTEN: `127.0.0.1:${port}`,
        LACRE_HTTP_LISTEN: '127.0.0.1:0',
        LACRE_ADMIN_SOCKET: socket,
        LACRE_WEB_LISTEN: '127.0.0.1:0',
        LACRE_WEB_PUBLIC_URL: 'https://keys.example.org',
        LACRE_WEB_SENDER: 'keys@example.org',
        LACRE_KEYS_DOMAINS: 'example.org',
      });
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /EADDRINUSE|in use/);
      await assert.rejects(stat(socket), { code: 'ENOENT' }, 'the admin socket is removed');
    } finally {
      taken.close();
    }
  });

  it('stops on an unknown key in the config file, naming it and the file', async () => {
    const file = join(dir, 'lacre.toml');
    await writeFile(file, '[smtp]\nmax_sise = "10MB"\n');
    const result = await runLacre(['--config', file, 'serve'], {});
    assert.equal(result.code, 1);
    assert.match(result.stderr, /smtp\.max_sise/);
    assert.match(result.stderr, new RegExp(file.replace(/[.]/g, '\\.')));
  });

  it('stops on a bad value from the environment, naming the variable', async () => {
    const result = await runLacre(['serve'], { LACRE_RELAY_PORT: '99999' });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /relay\.port.*LACRE_RELAY_PORT/);
  });
});
