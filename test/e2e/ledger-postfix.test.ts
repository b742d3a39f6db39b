/**
 * Exactly once where it can be (issue 15, docs/exactly-once.md), through a real Postfix: a bounded load to three
 * recipients (two keyed, one not), `lacre serve` killed with SIGKILL twice mid-load and restarted as systemd would,
 * once with the delivery ledger off (relay.delivered_retention_hours = 0) and once on. Nothing may be lost either
 * way; the duplicates of both runs are printed. With the ledger on, retries must skip copies already accepted; a
 * crash between the end of a copy's DATA and its record can still duplicate that copy.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import { databaseBackends, databaseEnv, openTestDatabase, type TestBackend, type TestDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, type GpgHome } from '../helpers/gpg.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { freePort, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../helpers/postfix.js';

const MESSAGES = Number(process.env.LACRE_LEDGER_E2E_MESSAGES ?? 150);
const KILLS = 2;
const RECIPIENTS = ['alice@example.test', 'bob@example.test', 'carol@example.test'];
const SENDER = 'sender@example.org';
const DRAIN_TIMEOUT_MS = 180_000;

function message(index: number): Buffer {
  // Every tenth message is over the in-memory limit (256 KiB): the streamed path is killed too.
  const lines = index % 10 === 0 ? 6000 : 20;
  return Buffer.from(
    `From: <${SENDER}>\r\nTo: ${RECIPIENTS.join(', ')}\r\nSubject: ledger load ${index}\r\nMessage-ID: <ledger-${index}@example.org>\r\n\r\n` +
      `${`line of message ${index}: the quick brown fox jumps over the lazy dog\r\n`.repeat(lines)}`,
  );
}

async function databaseWithKeys(backend: TestBackend, armored: string): Promise<TestDatabase> {
  const database = await openTestDatabase(backend);
  // PGlite allows one process at a time: the lacre children open it after this one let go.
  await database.db.close();
  const keyFile = join(tmpdir(), `lacre-ledger-keys-${process.pid}-${Date.now()}.asc`);
  await writeFile(keyFile, armored);
  const imported = await runLacre(['keys', 'import', keyFile], databaseEnv(database.config));
  assert.equal(imported.code, 0, imported.stderr);
  return database;
}

interface Tally {
  lost: number;
  duplicated: number;
  skippedByLedger: number;
}

/** Copies per Message-ID in each recipient's Maildir. */
async function tally(postfix: PostfixInstance): Promise<Omit<Tally, 'skippedByLedger'>> {
  let lost = 0;
  let duplicated = 0;
  for (const recipient of RECIPIENTS) {
    const counts = new Map<string, number>();
    for (const path of await postfix.delivered(recipient)) {
      const head = (await readFile(path)).subarray(0, 64 * 1024).toString('latin1');
      const id = /^Message-ID: <([^>]+)>/im.exec(head)?.[1];
      assert.ok(id, `a delivered copy without Message-ID: ${path}`);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    for (let i = 0; i < MESSAGES; i++) {
      const n = counts.get(`ledger-${i}@example.org`) ?? 0;
      if (n === 0) lost++;
      else duplicated += n - 1;
    }
  }
  return { lost, duplicated };
}

async function waitUntil(what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Sends the load, kills Lacre (SIGKILL) KILLS times while it is accepting messages, then waits for the queue to drain. */
async function loadWithKills(database: TestDatabase, retentionHours: number): Promise<Tally> {
  const filterPort = await freePort();
  const postfix = await startPostfix({ filterPort });
  const env = {
    ...databaseEnv(database.config),
    LACRE_SMTP_LISTEN: `127.0.0.1:${filterPort}`,
    LACRE_RELAY_PORT: String(postfix.reinjectPort),
    LACRE_RELAY_DELIVERED_RETENTION_HOURS: String(retentionHours),
    LACRE_LOG_LEVEL: 'info',
  };
  let lacre = await LacreServer.start(env);
  let skippedByLedger = 0;
  const countSkips = (server: LacreServer) => {
    for (const line of server.logs) {
      const recipients = (line.recipients ?? []) as { action?: string }[];
      skippedByLedger += recipients.filter((r) => r.action === 'already-delivered').length;
    }
  };
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postfix.smtpPort, pool: true, maxConnections: 4, secure: false, ignoreTLS: true });
  try {
    const sending = Promise.all(Array.from({ length: MESSAGES }, (_, i) => transport.sendMail({ envelope: { from: SENDER, to: RECIPIENTS }, raw: message(i) })));
    for (let kill = 0; kill < KILLS; kill++) {
      const accepted = () => lacre.logs.filter((line) => line.msg === 'message accepted').length;
      await waitUntil('lacre accepting messages', async () => accepted() >= MESSAGES / (KILLS + 2), DRAIN_TIMEOUT_MS);
      lacre.kill();
      await lacre.stop();
      countSkips(lacre);
      lacre = await LacreServer.start(env);
      await postfix.flush();
    }
    await sending;
    await waitUntil(
      'every copy delivered and the queue empty',
      async () => (await postfix.queue()).length === 0 && (await tally(postfix)).lost === 0,
      DRAIN_TIMEOUT_MS,
    ).catch(async (error: unknown) => {
      throw new Error(`${String(error)}\n--- queue ---\n${JSON.stringify(await postfix.queue())}`);
    });
    // Postfix retries every second here: give a late duplicate the time to show up.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const counted = await tally(postfix);
    countSkips(lacre);
    return { ...counted, skippedByLedger };
  } finally {
    transport.close();
    await lacre.stop();
    await postfix.stop();
  }
}

const unavailable = postfixUnavailableReason();

describe('exactly once where it can be: kill -9 of lacre serve under load, through a real Postfix', { skip: unavailable }, async () => {
  let home: GpgHome;
  let armored = '';
  before(async () => {
    home = await createGpgHome();
    armored = (await generateKey(home, { email: 'alice@example.test' })).publicArmored + (await generateKey(home, { email: 'bob@example.test' })).publicArmored;
  });
  after(() => home?.remove());

  for (const backend of await databaseBackends()) {
    it(`${backend.name}: ${MESSAGES} messages × ${RECIPIENTS.length} recipients, ${KILLS} kills: nothing lost, fewer duplicates with the ledger`, { timeout: 2 * DRAIN_TIMEOUT_MS + 120_000 }, async () => {
      const results: Record<string, Tally> = {};
      for (const [label, hours] of [['ledger off', 0], ['ledger on', 120]] as const) {
        const database = await databaseWithKeys(backend, armored);
        try {
          results[label] = await loadWithKills(database, hours);
        } finally {
          await database.cleanup();
        }
      }
      const off = results['ledger off']!;
      const on = results['ledger on']!;
      const copies = MESSAGES * RECIPIENTS.length;
      console.log(`# ${backend.name}: ${copies} copies, ${KILLS} × kill -9 — duplicates with the ledger off: ${off.duplicated}, on: ${on.duplicated} (${on.skippedByLedger} copies skipped as already delivered)`);
      assert.equal(off.lost, 0);
      assert.equal(on.lost, 0);
      assert.equal(off.skippedByLedger, 0, 'retention 0: no ledger');
      // Fewer duplicates with the ledger is a matter of where the kills fall: the copies it skipped are the proof.
      assert.ok(on.skippedByLedger > 0, 'retries of partly delivered messages skipped the copies already accepted');
    });
  }
});
