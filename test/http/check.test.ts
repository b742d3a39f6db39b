/** `lacre check` against a real PostgreSQL and a real relay sink: the readiness checks, exit code, masked config dump. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { runLacre } from '../helpers/lacre.js';
import { freshPostgres, postgresAvailable, type FreshPostgres } from './helpers.js';
import { freePort } from '../helpers/ports.js';

const PASSWORD = 'hunter2-not-for-logs';


describe('lacre check (real PostgreSQL, relay sink)', { skip: !(await postgresAvailable()) && 'needs a PostgreSQL server' }, () => {
  let sink: SmtpSink;
  let database: FreshPostgres;
  let urlWithPassword: string;

  before(async () => {
    sink = await SmtpSink.start();
    database = await freshPostgres('lacre_check');
    // Trust authentication ignores the password: it is only there to be masked.
    const url = new URL(database.directUrl);
    url.password = PASSWORD;
    urlWithPassword = url.toString();
  });

  after(async () => {
    await sink?.stop();
    await database?.drop();
  });

  it('fails on an unmigrated server database and says to run lacre migrate', async () => {
    const result = await runLacre(['check'], { LACRE_DATABASE_URL: urlWithPassword, LACRE_RELAY_PORT: String(sink.port) });
    assert.equal(result.code, 1, result.stderr);
    const out = result.stdout.toString('utf8');
    assert.match(out, /^FAILED {2}migrations .*pending: 001_keys.*run lacre migrate$/m);
    assert.match(out, /^ok {6}database /m);
    assert.match(out, /^NOT ready: migrations failed$/m);
  });

  it('passes when everything answers, printing the configuration with the database password masked', async () => {
    const migrated = await runLacre(['migrate'], { LACRE_DATABASE_URL: urlWithPassword });
    assert.equal(migrated.code, 0, migrated.stderr);
    const result = await runLacre(['check'], { LACRE_DATABASE_URL: urlWithPassword, LACRE_RELAY_PORT: String(sink.port) });
    const out = result.stdout.toString('utf8');
    assert.equal(result.code, 0, out + result.stderr);
    for (const name of ['database', 'relay', 'migrations']) assert.match(out, new RegExp(`^ok {6}${name} `, 'm'));
    assert.match(out, /^ready$/m);
    assert.match(out, /^\[database\]$/m);
    assert.match(out, /^url = "postgres:\/\/postgres:\*{5}@127\.0\.0\.1:\d+\/lacre_check_\d+_\d+"$/m);
    assert.match(out, new RegExp(`^port = ${sink.port}$`, 'm'), 'the relay port in effect is shown');
    assert.match(out, /^max_size = "200 MiB"$/m, 'sizes are printed for people');
    assert.match(out, /^max_key_bytes = "1 MiB"$/m);
    assert.match(out, /^quota = "1 GiB"$/m);
    assert.ok(!out.includes(PASSWORD) && !result.stderr.includes(PASSWORD), 'the password appears nowhere');
  });

  it('advises against a delivery ledger shorter than Postfix\'s queue lifetime, still ready; --json lists it', async () => {
    const env = { LACRE_DATABASE_URL: urlWithPassword, LACRE_RELAY_PORT: String(sink.port), LACRE_RELAY_DELIVERED_RETENTION_HOURS: '24' };
    const text = await runLacre(['check'], env);
    assert.equal(text.code, 0, text.stdout.toString('utf8') + text.stderr);
    assert.match(text.stdout.toString('utf8'), /^ready\nadvice {2}relay\.delivered_retention_hours: 24 h is shorter than Postfix's default maximal_queue_lifetime/m);
    const json = JSON.parse((await runLacre(['check', '--json'], env)).stdout.toString('utf8')) as { advice: Array<{ setting: string }> };
    assert.deepEqual(json.advice.map((advice) => advice.setting), ['relay.delivered_retention_hours']);
  });

  it('exits 1 naming the relay when nothing listens there; --json says the same', async () => {
    const env = { LACRE_DATABASE_URL: urlWithPassword, LACRE_RELAY_PORT: String(await freePort()) };
    const text = await runLacre(['check'], env);
    assert.equal(text.code, 1);
    assert.match(text.stdout.toString('utf8'), /^FAILED {2}relay .*no SMTP greeting from 127\.0\.0\.1:\d+$/m);
    const json = await runLacre(['check', '--json'], env);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout.toString('utf8')) as {
      ready: boolean;
      checks: Array<{ name: string; ok: boolean }>;
      config: { database: { url: string }; smtp: { max_size: number } };
    };
    assert.equal(report.ready, false);
    assert.deepEqual(Object.fromEntries(report.checks.map((c) => [c.name, c.ok])), { database: true, relay: false, migrations: true });
    assert.equal(report.config.database.url.includes(PASSWORD), false);
    assert.equal(report.config.smtp.max_size, 200 * 1024 * 1024, '--json keeps sizes as numbers of bytes');
    assert.match(report.config.database.url, /:\*{5}@/);
  });

  it('exits 1 naming the database when PostgreSQL does not answer', async () => {
    const down = new URL(urlWithPassword);
    down.port = String(await freePort());
    const result = await runLacre(['check'], { LACRE_DATABASE_URL: down.toString(), LACRE_RELAY_PORT: String(sink.port) });
    assert.equal(result.code, 1);
    const out = result.stdout.toString('utf8');
    assert.match(out, /^FAILED {2}database /m);
    assert.match(out, /^ok {6}relay /m);
    assert.ok(!out.includes(PASSWORD));
  });

  it('with incoming_box.url, checks the box: ok while it answers, FAILED naming it (password masked) when it does not', async () => {
    const box = createHttpServer((_request, response) => response.writeHead(401).end());
    await new Promise<void>((resolve) => box.listen(0, '127.0.0.1', resolve));
    const port = (box.address() as AddressInfo).port;
    const env = {
      LACRE_DATABASE_URL: urlWithPassword,
      LACRE_RELAY_PORT: String(sink.port),
      LACRE_INCOMING_BOX_URL: `http://mx:${PASSWORD}@127.0.0.1:${port}/`,
      LACRE_INCOMING_BOX_TOKEN: `lacre-mx:${PASSWORD}`,
    };
    try {
      const up = await runLacre(['check'], env);
      const out = up.stdout.toString('utf8');
      assert.equal(up.code, 0, out + up.stderr);
      assert.match(out, /^ok {6}box /m, 'any HTTP answer (here 401) means the box is reachable');
      assert.ok(!out.includes(PASSWORD), 'neither the token nor the URL password is printed');
    } finally {
      await new Promise<void>((resolve) => box.close(() => resolve()));
    }
    const down = await runLacre(['check', '--json'], env);
    assert.equal(down.code, 1);
    const report = JSON.parse(down.stdout.toString('utf8')) as { checks: Array<{ name: string; ok: boolean; error?: string }> };
    const boxCheck = report.checks.find((check) => check.name === 'box');
    assert.equal(boxCheck?.ok, false);
    assert.match(boxCheck?.error ?? '', new RegExp(`^Incoming Box http://mx:\\*+@127\\.0\\.0\\.1:${port}/ does not answer$`));
    assert.deepEqual(report.checks.filter((check) => !check.ok).map((check) => check.name), ['box']);
    assert.ok(!down.stdout.toString('utf8').includes(PASSWORD));
  });
});
