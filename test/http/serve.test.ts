/**
 * The operators' HTTP listener of a real `lacre serve` child: exact counters after a known mix of messages,
 * readiness following a real relay sink and a real PostgreSQL (cut through a TCP proxy), the log level at
 * run time (SIGUSR2 and PUT /admin/log-level).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGpgHome, generateKey, revokeKey, type GpgHome } from '../helpers/gpg.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { RawSmtpClient, sendRaw } from '../helpers/smtp-client.js';
import { forcedLogLevel, LacreServer, runLacre } from '../helpers/lacre.js';
import { LEAK_MARKERS } from '../helpers/leak-markers.js';
import { pgpMimeMessage } from '../helpers/corpus.js';
import { freshPostgres, getJson, postgresAvailable, putJson, scrape, type FreshPostgres } from './helpers.js';

const plain = (id: string) =>
  Buffer.from(`From: s@example.net\r\nTo: someone@example.test\r\nSubject: ${LEAK_MARKERS.subject}\r\nMessage-ID: <${id}@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${LEAK_MARKERS.body}\r\n`);
/** A real PGP/MIME message (symmetric): only what is encrypted in its structure passes as already encrypted. */
const alreadyEncrypted = Buffer.concat([Buffer.from('Message-ID: <already@example.net>\r\n'), pgpMimeMessage]);
/** Over the 1 MB smtp.max_size this suite runs with. */
const oversized = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(1_200_000, 'x\r\n')]);

const FROM = 'sender@example.net';

describe('lacre serve: metrics, health and log level over HTTP (real PostgreSQL, relay sink, gpg)', { skip: !(await postgresAvailable()) && 'needs a PostgreSQL server' }, () => {
  let home: GpgHome;
  let sink: SmtpSink;
  let server: LacreServer;
  let database: FreshPostgres;
  let keyDir: string;
  const http = () => `http://127.0.0.1:${server.httpPort}`;

  before(async () => {
    home = await createGpgHome();
    const alice = await generateKey(home, { email: 'alice@example.test' });
    const dave = await generateKey(home, { email: 'dave@example.test', algo: 'rsa3072' });
    const erin = await generateKey(home, { email: 'erin@example.test', expire: '3d' });
    const frank = await generateKey(home, { email: 'frank@example.test' });
    sink = await SmtpSink.start();
    database = await freshPostgres('lacre_http');
    const env = { LACRE_DATABASE_URL: database.url };
    const migrated = await runLacre(['migrate'], env);
    assert.equal(migrated.code, 0, migrated.stderr);
    keyDir = await mkdtemp(join(tmpdir(), 'lacre-http-keys-'));
    const importFile = async (name: string, armored: string, ...flags: string[]) => {
      const file = join(keyDir, name);
      await writeFile(file, armored);
      const imported = await runLacre(['keys', 'import', ...flags, file], env);
      assert.equal(imported.code, 0, imported.stderr);
    };
    await importFile('mime.asc', alice.publicArmored + erin.publicArmored + frank.publicArmored);
    await importFile('inline.asc', dave.publicArmored, '--style', 'inline');
    // Stored while usable, then revoked: Frank's recipients get plain-unusable-key.
    await importFile('revoked.asc', await revokeKey(home, frank));
    server = await LacreServer.start({ ...env, LACRE_RELAY_PORT: String(sink.port), LACRE_SMTP_MAX_SIZE: '1MB', LACRE_LOG_LEVEL: 'info' });
    assert.ok(server.httpPort > 0, 'the ready line names the HTTP listener');
  });

  after(async () => {
    const code = await server?.stop();
    assert.equal(code, 0, 'lacre serve exits cleanly on SIGTERM');
    await sink?.stop();
    await database?.drop();
    if (keyDir) await rm(keyDir, { recursive: true, force: true });
    await home?.remove();
  });

  it('counts a known mix of messages exactly', async () => {
    sink.messages.length = 0;
    const sent: Buffer[] = [];
    const send = async (to: string[], raw: Buffer) => {
      sent.push(raw);
      return (await sendRaw(server.port, { from: FROM, to }, raw)).data[0]!;
    };
    assert.match(await send(['alice@example.test', 'carol@example.test'], plain('m1')), /^250 /);
    assert.match(await send(['dave@example.test'], plain('m2')), /^250 /);
    assert.match(await send(['alice@example.test'], alreadyEncrypted), /^250 /);
    assert.match(await send(['frank@example.test'], plain('m4')), /^250 /);
    assert.match(await send(['carol@example.test'], oversized), /^552 5\.3\.4 /);
    const port = sink.port;
    await sink.stop();
    assert.match(await send(['alice@example.test'], plain('m6')), /^451 4\.4\.1 /);
    await sink.listen({ port });

    const metrics = await scrape(http());
    const expect = (series: string, value: number) => assert.equal(metrics.get(series), value, series);
    expect('lacre_messages_total{outcome="accepted"}', 4);
    expect('lacre_messages_total{outcome="tempfailed"}', 1);
    expect('lacre_messages_total{outcome="rejected"}', 1);
    // The tempfailed message's recipient is not counted: Postfix retries it.
    expect('lacre_recipients_total{action="encrypted-mime"}', 1);
    expect('lacre_recipients_total{action="encrypted-inline"}', 1);
    expect('lacre_recipients_total{action="plain-no-key"}', 1);
    expect('lacre_recipients_total{action="plain-unusable-key"}', 1);
    expect('lacre_recipients_total{action="already-encrypted"}', 1);
    expect('lacre_recipients_total{action="incoming-box"}', 0);
    expect('lacre_errors_total{kind="relay"}', 1);
    expect('lacre_errors_total{kind="parse"}', 1);
    for (const kind of ['database', 'key', 'box', 'other']) expect(`lacre_errors_total{kind="${kind}"}`, 0);
    expect('lacre_received_bytes_total', sent.reduce((sum, raw) => sum + raw.length, 0));
    assert.equal(sink.messages.length, 5, 'two copies of the first message, one of each other accepted one');
    expect('lacre_delivered_bytes_total{downstream="relay"}', sink.messages.reduce((sum, m) => sum + m.data.length, 0));
    expect('lacre_delivered_bytes_total{downstream="box"}', 0);
    expect('lacre_message_duration_seconds_count', 6);
    // Messages 1 and 2 were encrypted (4 KiB and less); already-encrypted and plain ones were not.
    expect('lacre_encrypted_message_duration_seconds_count{size_class="le_16KiB"}', 2);
    expect('lacre_encrypted_message_duration_seconds_count{size_class="le_256KiB"}', 0);
    expect('lacre_messages_in_flight', 0);
    expect('lacre_downstream_sends_in_flight{downstream="relay"}', 0);
    // alice, carol, dave, frank read once each; alice twice and carol once more from the cache.
    expect('lacre_key_cache_misses_total', 4);
    expect('lacre_key_cache_hits_total', 3);
    expect('lacre_key_cache_entries', 4);
    expect('lacre_key_cache_hit_ratio', 3 / 7);
    expect('lacre_keys_confirmed', 4);
    expect('lacre_keys_expiring_soon', 1);
    expect('lacre_relay_pool_max_connections', 20);
    assert.ok(metrics.has('process_cpu_user_seconds_total'), 'Node process metrics are included');
    assert.ok(metrics.has('nodejs_heap_size_used_bytes'), 'Node process metrics are included');
    const text = await (await fetch(`${http()}/metrics`)).text();
    assert.doesNotMatch(text, /example\.(test|net)/, 'no address in any label');
  });

  it('counts open SMTP sessions', async () => {
    const { client } = await RawSmtpClient.connect(server.port);
    assert.equal((await scrape(http())).get('lacre_smtp_sessions'), 1);
    await client.close();
    await eventually(async () => assert.equal((await scrape(http())).get('lacre_smtp_sessions'), 0));
  });

  it('GET /healthz answers while the process is up, whatever the relay', async () => {
    const port = sink.port;
    await sink.stop();
    try {
      const health = await getJson(`${http()}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(health.body, { status: 'ok' });
    } finally {
      await sink.listen({ port });
    }
  });

  it('GET /readyz turns 503 naming the relay while the relay is down, 200 when it is back', async () => {
    const port = sink.port;
    assert.equal((await getJson(`${http()}/readyz`)).status, 200);
    await sink.stop();
    const down = await getJson(`${http()}/readyz`);
    assert.equal(down.status, 503);
    assert.deepEqual(down.body.failed, ['relay']);
    assert.deepEqual(checkStates(down.body), { database: true, relay: false });
    assert.equal((await scrape(http())).get('lacre_ready_check_up{check="relay"}'), 0);
    await sink.listen({ port });
    const up = await getJson(`${http()}/readyz`);
    assert.equal(up.status, 200, JSON.stringify(up.body));
    assert.deepEqual(up.body.failed, []);
    assert.equal((await scrape(http())).get('lacre_ready_check_up{check="relay"}'), 1);
  });

  it('GET /readyz turns 503 naming the database while PostgreSQL is cut off, 200 when it is back', async () => {
    await database.proxy.stop();
    try {
      const down = await getJson(`${http()}/readyz`);
      assert.equal(down.status, 503);
      assert.deepEqual(down.body.failed, ['database']);
      assert.deepEqual(checkStates(down.body), { database: false, relay: true });
      // A recipient never looked up cannot be answered: 451 at RCPT, counted as refused and as a database error.
      const refused = await sendRaw(server.port, { from: FROM, to: ['nobody-yet@example.test'] }, plain('m7'));
      assert.match(refused.rcpt[0]!, /^451 4\.3\.0 /);
      const metrics = await scrape(http());
      assert.equal(metrics.get('lacre_recipients_refused_total{reply="tempfail"}'), 1);
      assert.equal(metrics.get('lacre_errors_total{kind="database"}'), 1);
      assert.equal(metrics.get('lacre_ready'), 0);
    } finally {
      await database.proxy.start();
    }
    await eventually(async () => assert.equal((await getJson(`${http()}/readyz`)).status, 200));
    assert.equal((await scrape(http())).get('lacre_ready'), 1);
  });

  it('SIGUSR2 switches to debug (per-stage lines appear) and back to the configured level', { skip: forcedLogLevel && 'LACRE_LOG_LEVEL of the run sets the level' }, async () => {
    server.signal('SIGUSR2');
    await server.waitForLog((l) => l.msg === 'log level changed' && l.next === 'debug' && l.via === 'SIGUSR2');
    await sendRaw(server.port, { from: FROM, to: ['alice@example.test'] }, plain('debug-on'));
    await server.waitForLog((l) => l.level === 'debug' && l.msg === 'recipient looked up' && l.to === 'alice@example.test');
    await server.waitForLog((l) => l.level === 'debug' && l.msg === 'copy delivered' && l.copy === 'mime');
    const summary = await server.waitForLog((l) => l.messageId === '<debug-on@example.net>' && l.msg === 'message accepted');
    for (const stage of ['lookupMs', 'receiveMs', 'durationMs']) assert.equal(typeof summary[stage], 'number', stage);
    const [receiveMs, durationMs] = [summary.receiveMs as number, summary.durationMs as number];
    assert.ok(durationMs > 0 && receiveMs >= 0 && receiveMs <= durationMs, JSON.stringify({ receiveMs, durationMs }));

    server.signal('SIGUSR2');
    await server.waitForLog((l) => l.msg === 'log level changed' && l.next === 'info');
    const debugLines = server.logs.filter((l) => l.level === 'debug').length;
    await sendRaw(server.port, { from: FROM, to: ['alice@example.test'] }, plain('debug-off'));
    await server.waitForLog((l) => l.messageId === '<debug-off@example.net>');
    assert.equal(server.logs.filter((l) => l.level === 'debug').length, debugLines, 'no debug line after switching back');
  });

  it('PUT /admin/log-level sets the level; a bad level is a 400', { skip: forcedLogLevel && 'LACRE_LOG_LEVEL of the run sets the level' }, async () => {
    const set = await putJson(`${http()}/admin/log-level`, { level: 'debug' });
    assert.equal(set.status, 200);
    assert.deepEqual(set.body, { previous: 'info', level: 'debug' });
    assert.deepEqual((await getJson(`${http()}/admin/log-level`)).body, { level: 'debug' });
    await server.waitForLog((l) => l.msg === 'log level changed' && l.via === 'http' && l.next === 'debug');
    const bad = await putJson(`${http()}/admin/log-level`, { level: 'loud' });
    assert.equal(bad.status, 400);
    assert.match(String(bad.body.error), /one of fatal, error, warn, info, debug, trace, silent/);
    assert.equal((await putJson(`${http()}/admin/log-level`, { level: 'info' })).status, 200);
    assert.deepEqual((await getJson(`${http()}/admin/log-level`)).body, { level: 'info' });
  });

  it('answers 404 for an unknown path and 405 for a wrong method', async () => {
    assert.equal((await getJson(`${http()}/nothing-here`)).status, 404);
    const wrong = await fetch(`${http()}/metrics`, { method: 'DELETE' });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get('allow'), 'GET');
  });
});

function checkStates(body: Record<string, unknown>): Record<string, boolean> {
  return Object.fromEntries((body.checks as Array<{ name: string; ok: boolean }>).map((check) => [check.name, check.ok]));
}

/** Retries an assertion for up to 5 s (a socket close or a pool reconnect is seen a moment later). */
async function eventually(assertion: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      return await assertion();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
