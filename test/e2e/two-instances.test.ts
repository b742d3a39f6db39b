/**
 * Scaling out: two `lacre serve` processes on one PostgreSQL database, both named in a real Postfix's content
 * filter, a counting sink behind them (standing in for the reinjection listener).
 *
 * Postfix reaches both through its own nexthop list (Postfix 3.5+): `content_filter = lacre:[A],[B]`. The smtp(8)
 * client tries the destinations in order, so B takes the load the moment A refuses connections: no balancer to
 * run or to fail, and the configuration an admin would write (docs/scaling.md).
 *
 * 1. A key imported, replaced and disabled through A's admin socket is used by B for the very next message
 *    (the lacre_keys trigger NOTIFYs every instance's key cache), checked with gpg --list-packets key ids.
 * 2. A is kill -9'd mid-load (200 messages, keyed and keyless recipients): every message reaches every recipient,
 *    encrypted exactly when it should be; duplicates (SMTP mode re-sends copies already accepted when Postfix
 *    retries a message whose reply was lost with A) are counted apart and printed.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import { databaseBackends, databaseEnv, openTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { postfixUnavailableReason, startPostfix, type PostfixInstance } from '../helpers/postfix.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { SmtpSink, type SunkMessage } from '../helpers/smtp-sink.js';

const SENDER = 'sender@example.org';
const KEYED = 'alice@example.test';
const KEYLESS = 'carol@example.test';
const CHANGING = 'bob@example.test';
const LOAD = 200;
const KILL_AFTER_COPIES = 60;
const DRAIN_TIMEOUT_MS = 60_000;
const PGP = '-----BEGIN PGP MESSAGE-----';

const postgres = (await databaseBackends()).find((backend) => backend.name === 'postgres');
const skip = postfixUnavailableReason() ?? (postgres ? undefined : 'no PostgreSQL server (TEST_DATABASE_URL): two instances need one');

function loadMessage(index: number, to: readonly string[]): Buffer {
  const size = index % 25 === 0 ? 300 * 1024 : 1024 + (index % 8) * 8 * 1024;
  const line = `line of message ${index} ${'x'.repeat(60)}\r\n`;
  const body = line.repeat(Math.ceil(size / line.length));
  const headers = [
    `From: Sender <${SENDER}>`,
    `To: ${to.join(', ')}`,
    `Subject: two instances ${index}`,
    `Message-ID: <${messageId(index)}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
  ];
  return Buffer.from(`${headers.join('\r\n')}\r\n\r\n${body}`, 'latin1');
}

const messageId = (index: number): string => `two-instances-${index}@example.org`;

function recipientsOf(index: number): string[] {
  if (index % 3 === 0) return [KEYED, KEYLESS];
  return index % 3 === 1 ? [KEYED] : [KEYLESS];
}

function messageIdOf(copy: SunkMessage): string | undefined {
  const headerEnd = copy.data.indexOf('\r\n\r\n');
  return /^Message-ID: <([^>]+)>/im.exec(copy.data.subarray(0, headerEnd < 0 ? undefined : headerEnd).toString('latin1'))?.[1];
}

interface Tally {
  missing: string[];
  duplicates: number;
  plaintextToKeyed: number;
  encryptedToKeyless: number;
}

/** Every (message, recipient) pair of the load against the copies the sink holds. */
function tally(copies: readonly SunkMessage[]): Tally {
  const seen = new Map<string, number>();
  const result: Tally = { missing: [], duplicates: 0, plaintextToKeyed: 0, encryptedToKeyless: 0 };
  for (const copy of copies) {
    const id = messageIdOf(copy);
    if (!id?.startsWith('two-instances-')) continue;
    const encrypted = copy.data.includes(PGP);
    for (const to of copy.to) {
      const pair = `${id} ${to}`;
      seen.set(pair, (seen.get(pair) ?? 0) + 1);
      if (to === KEYED && !encrypted) result.plaintextToKeyed += 1;
      if (to === KEYLESS && encrypted) result.encryptedToKeyless += 1;
    }
  }
  for (let index = 0; index < LOAD; index += 1) {
    for (const to of recipientsOf(index)) {
      const count = seen.get(`${messageId(index)} ${to}`) ?? 0;
      if (count === 0) result.missing.push(`${messageId(index)} ${to}`);
      result.duplicates += Math.max(0, count - 1);
    }
  }
  return result;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('two lacre serve instances on one PostgreSQL database', { skip }, () => {
  let work: string;
  let home: GpgHome;
  let keyed: GpgKey;
  let first: GpgKey;
  let second: GpgKey;
  let database: TestDatabase;
  let sink: SmtpSink;
  let a: LacreServer;
  let b: LacreServer;
  let postfix: PostfixInstance;
  let adminEnv: NodeJS.ProcessEnv;

  async function startInstance(name: string, adminSocket: string): Promise<LacreServer> {
    const cwd = join(work, name);
    await mkdir(cwd, { mode: 0o700 });
    return LacreServer.start(
      {
        ...databaseEnv(database.config),
        LACRE_RELAY_PORT: String(sink.port),
        LACRE_ADMIN_SOCKET: adminSocket,
        LACRE_LOG_LEVEL: 'info',
        // Far longer than the test: B sees A's key changes only through LISTEN/NOTIFY, never because its cached
        // keys expired (the default TTL, 300 s, would be just as long, but this does not hang on a default).
        LACRE_KEYS_CACHE_TTL_SECONDS: '3600',
      },
      { cwd },
    );
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'lacre-two-instances-'));
    home = await createGpgHome();
    // One at a time: gpg cannot update one keyring from several processes at once.
    keyed = await generateKey(home, { email: KEYED });
    first = await generateKey(home, { email: CHANGING, name: 'bob first' });
    second = await generateKey(home, { email: CHANGING, name: 'bob second' });
    database = await openTestDatabase(postgres!);
    sink = await SmtpSink.start();
    const socketA = join(work, 'a.sock');
    [a, b] = await Promise.all([startInstance('a', socketA), startInstance('b', 'off')]);
    adminEnv = { ...databaseEnv(database.config), LACRE_ADMIN_SOCKET: socketA };
    postfix = await startPostfix({
      filterPort: a.port,
      mainCf: { content_filter: `lacre:[127.0.0.1]:${a.port},[127.0.0.1]:${b.port}` },
    });
  });

  after(async () => {
    await postfix?.stop();
    for (const server of [a, b]) await server?.stop().catch(() => undefined);
    await sink?.stop();
    await database?.cleanup();
    await home?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** `lacre keys …` through instance A's admin socket (the message on stderr proves which way it went). */
  async function keysThroughA(args: string[]): Promise<void> {
    const result = await runLacre(['keys', ...args], adminEnv);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /using the running lacre serve \(admin socket .*a\.sock\)/);
  }

  async function importThroughA(key: GpgKey, file: string): Promise<void> {
    const path = join(work, file);
    await writeFile(path, key.publicArmored);
    await keysThroughA(['import', path]);
  }

  /** One message straight to instance B; the key ids its copy for bob was encrypted to ([] = plain). */
  async function nextCopyThroughB(): Promise<string[]> {
    const before = sink.messages.length;
    const reply = await sendRaw(b.port, { from: SENDER, to: [CHANGING] }, loadMessage(1, [CHANGING]));
    assert.match(reply.data[0]!, /^250 /);
    const copy = sink.messages[before];
    assert.ok(copy, 'B relayed the copy before answering 250');
    return copy.data.includes(PGP) ? listPacketsKeyIds(home, copy.data) : [];
  }

  it('a key imported, replaced and disabled through A is used by B for the very next message', async () => {
    assert.deepEqual(await nextCopyThroughB(), [], 'no key yet: plain');

    await importThroughA(first, 'first.asc');
    assert.deepEqual(await nextCopyThroughB(), [first.encryptionKeyId], 'imported through A: B encrypts to it');

    await importThroughA(second, 'second.asc');
    await keysThroughA(['disable', first.fingerprint]);
    assert.deepEqual(await nextCopyThroughB(), [second.encryptionKeyId], 'replaced through A: B encrypts to the new key only');

    await keysThroughA(['disable', CHANGING]);
    assert.deepEqual(await nextCopyThroughB(), [], 'disabled through A: B sends plain');
  });

  it('A is killed with -9 mid-load: every message reaches every recipient through B, encrypted exactly when it should be', async () => {
    await importThroughA(keyed, 'keyed.asc');
    const acceptedBy = (server: LacreServer): number => server.logs.filter((line) => line.msg === 'message accepted').length;
    const acceptedByBBefore = acceptedBy(b);
    const start = sink.messages.length;
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postfix.smtpPort, pool: true, maxConnections: 4, maxMessages: Infinity });
    const killed = (async () => {
      const deadline = Date.now() + DRAIN_TIMEOUT_MS;
      while (sink.messages.length - start < KILL_AFTER_COPIES && Date.now() < deadline) await sleep(20);
      a.kill();
    })();
    try {
      await Promise.all(
        Array.from({ length: LOAD }, (_, index) =>
          transport.sendMail({ envelope: { from: SENDER, to: recipientsOf(index) }, raw: loadMessage(index, recipientsOf(index)) }),
        ),
      );
    } finally {
      transport.close();
    }
    await killed;
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    let result = tally(sink.messages.slice(start));
    while ((result.missing.length > 0 || (await postfix.queue()).length > 0) && Date.now() < deadline) {
      await sleep(250);
      result = tally(sink.messages.slice(start));
    }
    const copies = LOAD + Math.ceil(LOAD / 3);
    console.log(
      [
        '| messages | copies | A accepted, then kill -9 | B accepted | lost | duplicated | plaintext to keyed |',
        '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
        `| ${LOAD} | ${copies} | ${acceptedBy(a)} | ${acceptedBy(b) - acceptedByBBefore} | ${result.missing.length} | ${result.duplicates} | ${result.plaintextToKeyed} |`,
      ].join('\n'),
    );
    assert.deepEqual(result.missing, [], `lost copies; queue: ${JSON.stringify(await postfix.queue())}`);
    assert.equal(result.plaintextToKeyed, 0, 'a keyed recipient received plaintext');
    assert.equal(result.encryptedToKeyless, 0, 'a keyless recipient received ciphertext');
    assert.deepEqual(await postfix.queue(), [], 'Postfix queue drained');
    assert.ok(acceptedBy(a) > 0, 'A took load before it was killed');
    assert.ok(acceptedBy(b) > acceptedByBBefore, 'B took over the load');
    // A duplicate is a copy of a message A was answering when it died (SMTP mode re-sends it): a handful, never a
    // share of the load (seen: 0-10 of 267).
    assert.ok(result.duplicates <= copies / 10, `${result.duplicates} duplicated copies of ${copies}`);
  });
});
