/**
 * Exactly once where it can be, deterministically: a message whose copy for carol was accepted while alice's was
 * still stalled at the downstream is cut by kill -9; the retry Postfix would send (the same bytes, the same queue
 * id) delivers alice's copy and skips carol's, because the ledger recorded it. With the ledger off, carol gets
 * it twice: the SMTP-mode rule the ledger refines (docs/exactly-once.md).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGpgHome, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { databaseBackends, databaseEnv, openTestDatabase } from '../helpers/databases.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

const ALICE = 'alice@example.test';
const CAROL = 'carol@example.test';

function message(id: string): Buffer {
  return Buffer.from(`From: bob@example.net\r\nTo: ${ALICE}, ${CAROL}\r\nMessage-ID: <${id}@example.net>\r\nSubject: retry\r\n\r\nthe body\r\n`);
}

describe('the delivery ledger across a kill -9', async () => {
  let home: GpgHome;
  let alice: GpgKey;
  let keyFile: string;
  let keyDir: string;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: ALICE });
    keyDir = await mkdtemp(join(tmpdir(), 'lacre-ledger-'));
    keyFile = join(keyDir, 'alice.asc');
    await writeFile(keyFile, alice.publicArmored);
  });
  after(async () => {
    await rm(keyDir, { recursive: true, force: true });
    await home.remove();
  });

  for (const backend of await databaseBackends()) {
    for (const ledger of [true, false]) {
      it(`${backend.name}, ledger ${ledger ? 'on' : 'off'}: the retry ${ledger ? 'skips' : 're-sends'} the copy accepted before the kill`, async () => {
        const database = await openTestDatabase(backend);
        await database.db.close();
        let stallAlice = true;
        const sink = await SmtpSink.start({ holdData: (to) => (stallAlice && to.includes(ALICE) ? new Promise<void>(() => undefined) : undefined) });
        const env = {
          ...databaseEnv(database.config),
          LACRE_RELAY_PORT: String(sink.port),
          LACRE_RELAY_TIMEOUT_SECONDS: '60',
          LACRE_RELAY_DELIVERED_RETENTION_HOURS: ledger ? '120' : '0',
        };
        let server: LacreServer | undefined;
        let stopCode: number | undefined;
        try {
          assert.equal((await runLacre(['keys', 'import', keyFile], env)).code, 0);
          server = await LacreServer.start(env);
          const queueId = `4Q${Date.now().toString(36).toUpperCase()}`;
          const raw = message(queueId);
          // The first attempt never gets its answer: the process is killed while alice's copy is stalled.
          void sendRaw(server.port, { from: 'bob@example.net', to: [ALICE, CAROL], xforward: `IDENT=${queueId}` }, raw).catch(() => undefined);
          await waitFor(() => sink.messages.some((m) => m.to.includes(CAROL)), 'carol\u2019s copy accepted');
          // The record follows the downstream's 250 by one database round trip.
          await new Promise((resolve) => setTimeout(resolve, 750));
          server.kill();

          stallAlice = false;
          server = await LacreServer.start(env);
          const retry = await sendRaw(server.port, { from: 'bob@example.net', to: [ALICE, CAROL], xforward: `IDENT=${queueId}` }, raw);
          assert.match(retry.data[0]!, /^250 /);
          const forCarol = sink.messages.filter((m) => m.to.includes(CAROL));
          const forAlice = sink.messages.filter((m) => m.to.includes(ALICE));
          assert.equal(forAlice.length, 1, 'alice\u2019s copy, stalled at the kill, is delivered by the retry');
          assert.deepEqual(await listPacketsKeyIds(home, forAlice[0]!.data), [alice.encryptionKeyId]);
          assert.equal(forCarol.length, ledger ? 1 : 2, ledger ? 'carol\u2019s copy is not sent twice' : 'without the ledger, the retry re-sends it');
          if (ledger) assert.ok(server.logs.some((line) => JSON.stringify(line).includes('already-delivered')), 'the log line says why');
        } finally {
          // Asserted after the try: an assert here would replace the failure the test body threw.
          stopCode = await server?.stop();
          await sink.stop();
          await database.cleanup();
        }
        assert.equal(stopCode, 0, 'the restarted server stops cleanly');
      });
    }
  }
});

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not seen within 20 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
