/**
 * The end-to-end bench behind a real Postfix: `node dist/bench/postfix.js [--quick] [--json FILE|-] [--rounds N]`.
 *
 *   bench ──SMTP, 10 sessions──▶ Postfix smtpd ─▶ queue ─▶ `lacre` smtp transport ─▶ filter ─▶ reinjection smtpd ─▶ virtual(8) ─▶ Maildir
 *
 * One private Postfix instance (test/helpers/postfix.ts, built from deploy/postfix/*.snippet) gets one extra inbound
 * smtpd per target, each with its own `-o content_filter=lacre:[127.0.0.1]:PORT` (as FILTER_README does per
 * listener), so every target runs through the same transport, queue and delivery agent and nothing is reloaded
 * between turns. Targets: `passthrough` (bench/passthrough.ts, no crypto: the ceiling), `lacre_cv25519`
 * (`lacre serve`, the recipient holds a cv25519 key, so every copy is encrypted) and `no_filter` (Postfix alone, for
 * context). A turn injects N 4 KiB messages over 10 kept-alive sessions and is timed until all N are files in the
 * recipient's Maildir new/; the order of the targets rotates from round to round and the Lacre / pass-through
 * ratio is taken within each round. Every delivered file is checked: encrypted for Lacre, plain for the others.
 * Needs root (Postfix master), /usr/bin/gpg, and PostgreSQL on 127.0.0.1:5432 or else embedded PGlite.
 */
import { execFile } from 'node:child_process';
import { appendFile, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { postfixProgram, startPostfix, type PostfixInstance } from '../test/helpers/postfix.js';
import { freePort } from '../test/helpers/ports.js';
import { readCpuMs, startHelper, startLacre, type Child } from './children.js';
import { BenchLifecycle } from './lifecycle.js';
import { LoadGenerator } from './load.js';
import { formatTable, newRecord, recordTitle, writeRecord, type BenchRecord } from './record.js';
import { createBenchDatabase, importKeys, makeKeys, withDatabase, type BenchDatabase } from './setup.js';
import { SmtpSession } from './smtp-client.js';
import { Samples } from './stats.js';

const execFileAsync = promisify(execFile);

const DOMAIN = 'example.test';
const RECIPIENT = `alice@${DOMAIN}`;
const ARMOR_HEADER = '-----BEGIN PGP MESSAGE-----';

interface Settings {
  mode: 'quick' | 'full';
  rounds: number;
  /** Messages per measured turn. */
  messages: number;
  warmupMessages: number;
  sessions: number;
  messageBytes: number;
  /** One turn (injection and delivery) fails past this. */
  turnTimeoutMs: number;
  /** The whole run fails past this. */
  deadlineMs: number;
  embedded: boolean;
  lacreLogLevel: string;
}

type TargetName = 'passthrough' | 'lacre_cv25519' | 'no_filter';

/** One inbound smtpd of the Postfix instance and what its content_filter points at. */
interface Target {
  name: TargetName;
  /** Port of the extra inbound smtpd for this target. */
  inboundPort: number;
  /** The filter's port, or undefined for Postfix alone. */
  filter: Child | undefined;
  encrypted: boolean;
}

interface TurnResult {
  seconds: number;
  injectSeconds: number;
  filterCpuMs: number | undefined;
}

function readSettings(): { settings: Settings; jsonFile: string | undefined } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      rounds: { type: 'string' },
      embedded: { type: 'boolean', default: false },
      'lacre-log-level': { type: 'string', default: 'warn' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/postfix.js [--quick] [--json FILE|-] [--rounds N] [--embedded] [--lacre-log-level warn|info]\n');
    process.exit(0);
  }
  const quick = values.quick === true;
  const rounds = values.rounds === undefined ? 3 : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10) throw new Error(`--rounds must be 1…10, got ${values.rounds}`);
  const settings: Settings = {
    mode: quick ? 'quick' : 'full',
    rounds,
    messages: quick ? 300 : 1000,
    warmupMessages: quick ? 100 : 300,
    sessions: 10,
    messageBytes: 4096,
    turnTimeoutMs: quick ? 120_000 : 300_000,
    deadlineMs: quick ? 600_000 : 1_800_000,
    embedded: values.embedded === true,
    lacreLogLevel: values['lacre-log-level'] ?? 'warn',
  };
  return { settings, jsonFile: values.json };
}

const bench = new BenchLifecycle('postfix bench', 15_000);
const progress = bench.progress;

async function main(): Promise<void> {
  const { settings, jsonFile } = readSettings();
  if (!postfixProgram()) throw new Error('postfix is not installed');
  if (process.getuid?.() !== 0) throw new Error('the Postfix bench needs root (a private Postfix master runs as root)');
  const deadline = bench.startedAt + settings.deadlineMs;
  const samples = new Samples();
  let database: BenchDatabase | undefined;
  try {
    database = await createBenchDatabase({ embedded: settings.embedded });
    const db = database;
    bench.onCleanup(() => db.remove());
    progress(`${settings.mode} run, database ${db.kind}; making a cv25519 key for ${RECIPIENT}`);
    const keys = await makeKeys([{ email: RECIPIENT, algo: 'cv25519' }]);
    await withDatabase(db, (opened) => importKeys(opened, keys));

    // The harness wants a filter port up front; no target uses the main.cf content_filter (see addInboundListeners).
    const postfix = await startPostfix({ filterPort: await freePort(), mailboxes: ['alice'] });
    bench.onCleanup(() => postfix.stop());
    progress(`postfix ${postfix.configDir}: reinjection on ${postfix.reinjectPort}`);

    const passthrough = await startHelper('passthrough', { BENCH_RELAY_PORT: String(postfix.reinjectPort) });
    bench.onCleanup(() => passthrough.stop());
    const lacre = await startLacre({
      ...db.env,
      LACRE_RELAY_HOST: '127.0.0.1',
      LACRE_RELAY_PORT: String(postfix.reinjectPort),
      LACRE_HTTP_LISTEN: '127.0.0.1:0',
      LACRE_LOG_LEVEL: settings.lacreLogLevel,
    });
    bench.onCleanup(async () => {
      await lacre.stop();
      const stderr = lacre.lastStderr.trim();
      if (stderr !== '') progress(`lacre serve wrote (${settings.lacreLogLevel} and above, last 4 KB):\n${stderr}`);
    });

    const targets = await addInboundListeners(postfix, [
      { name: 'passthrough', filter: passthrough, encrypted: false },
      { name: 'lacre_cv25519', filter: lacre, encrypted: true },
      { name: 'no_filter', filter: undefined, encrypted: false },
    ]);
    progress(targets.map((t) => `${t.name} via smtpd ${t.inboundPort}${t.filter ? ` → filter ${t.filter.port}` : ''}`).join(', '));

    for (const target of targets) {
      progress(`warm-up ${target.name}: ${settings.warmupMessages} messages`);
      await runTurn(postfix, target, settings, settings.warmupMessages, deadline);
    }
    for (let round = 0; round < settings.rounds; round += 1) {
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      const rates = new Map<TargetName, number>();
      for (const target of order) {
        const turn = await runTurn(postfix, target, settings, settings.messages, deadline);
        const rate = settings.messages / turn.seconds;
        rates.set(target.name, rate);
        samples.add(`postfix_${target.name}_msgs_per_s`, 'msg/s', rate);
        samples.add(`postfix_${target.name}_inject_msgs_per_s`, 'msg/s', settings.messages / turn.injectSeconds);
        if (turn.filterCpuMs !== undefined) samples.add(`postfix_${target.name}_filter_cpu_ms_per_msg`, 'ms', turn.filterCpuMs / settings.messages);
        progress(`round ${round + 1}/${settings.rounds} ${target.name}: ${rate.toFixed(1)} msg/s delivered (injected in ${turn.injectSeconds.toFixed(2)} s, delivered in ${turn.seconds.toFixed(2)} s)`);
      }
      samples.add('postfix_lacre_over_passthrough', 'ratio', rates.get('lacre_cv25519')! / rates.get('passthrough')!);
    }
  } finally {
    await bench.cleanUp();
  }
  progress(`done in ${((Date.now() - bench.startedAt) / 1000).toFixed(1)} s`);
  report(buildRecord(settings, database!.kind, samples), jsonFile);
}

/**
 * One extra inbound smtpd per target in the instance's master.cf, overriding content_filter for the mail it
 * receives, then one `postfix reload`; resolves once every new listener greets.
 */
async function addInboundListeners(postfix: PostfixInstance, specs: Array<Omit<Target, 'inboundPort'>>): Promise<Target[]> {
  const taken = [postfix.smtpPort, postfix.reinjectPort, ...specs.flatMap((spec) => (spec.filter ? [spec.filter.port] : []))];
  const targets: Target[] = [];
  for (const spec of specs) {
    let port = await freePort();
    while (taken.includes(port)) port = await freePort();
    taken.push(port);
    targets.push({ ...spec, inboundPort: port });
  }
  const entries = targets.map((target) => {
    const filter = target.filter ? `lacre:[127.0.0.1]:${target.filter.port}` : '';
    return `127.0.0.1:${target.inboundPort} inet n - n - - smtpd\n  -o syslog_name=postfix/bench-${target.name}\n  -o content_filter=${filter}\n`;
  });
  await appendFile(join(postfix.configDir, 'master.cf'), `# bench/postfix.ts: one inbound listener per target\n${entries.join('')}`);
  await execFileAsync(postfixProgram('postfix')!, ['-c', postfix.configDir, 'reload'], { timeout: 30_000 });
  await Promise.all(targets.map((target) => waitForGreeting(target.inboundPort, 15_000)));
  return targets;
}

async function waitForGreeting(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const session = await SmtpSession.open(port, 2_000).catch(() => undefined);
    if (session) return session.close();
    if (Date.now() > deadline) throw new Error(`postfix listener 127.0.0.1:${port} did not greet within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Injects `count` messages over kept-alive sessions (opened before the clock starts) and waits until `count` files
 * are in the Maildir's new/; checks them, then empties new/ for the next turn.
 */
async function runTurn(postfix: PostfixInstance, target: Target, settings: Settings, count: number, deadline: number): Promise<TurnResult> {
  const newDir = join(postfix.maildirFor(RECIPIENT), 'new');
  if ((await countFiles(newDir)) !== 0) throw new Error(`${newDir} is not empty before a turn`);
  const turnDeadline = Math.min(deadline, Date.now() + settings.turnTimeoutMs);
  const generator = await LoadGenerator.open({ port: target.inboundPort, recipients: [RECIPIENT], sessions: settings.sessions, messageBytes: settings.messageBytes, deadline: turnDeadline });
  const cpuBefore = target.filter ? readCpuMs(target.filter.pid) : undefined;
  const started = performance.now();
  let injectSeconds = 0;
  try {
    const sent = await generator.send({ maxMessages: count, windowMs: settings.turnTimeoutMs });
    injectSeconds = (performance.now() - started) / 1000;
    if (sent !== count) throw new Error(`${target.name}: injected ${sent} of ${count} messages within the turn`);
    await waitForFiles(postfix, newDir, count, turnDeadline, target.name);
  } finally {
    await generator.close();
  }
  const seconds = (performance.now() - started) / 1000;
  const filterCpuMs = target.filter && cpuBefore !== undefined ? readCpuMs(target.filter.pid) - cpuBefore : undefined;
  await checkDelivered(newDir, count, target);
  await emptyDir(newDir);
  return { seconds, injectSeconds, filterCpuMs };
}

async function waitForFiles(postfix: PostfixInstance, dir: string, count: number, deadline: number, name: string): Promise<void> {
  for (;;) {
    const files = await countFiles(dir);
    if (files >= count) return;
    if (Date.now() > deadline) {
      const queue = await postfix.queue().catch((error: unknown) => String(error));
      const log = (await postfix.log()).split('\n').slice(-40).join('\n');
      throw new Error(`${name}: ${files} of ${count} messages delivered in time\n--- queue (${Array.isArray(queue) ? queue.length : '?'}) ---\n${JSON.stringify(queue).slice(0, 2000)}\n--- maillog tail ---\n${log}`);
    }
    await sleep(10);
  }
}

/** Exactly `count` files, each one copy of a distinct bench message, armored ciphertext iff the target encrypts. */
async function checkDelivered(dir: string, count: number, target: Target): Promise<void> {
  await sleep(200); // a late duplicate would show up here
  const names = await readdir(dir);
  if (names.length !== count) throw new Error(`${target.name}: ${names.length} files delivered for ${count} messages`);
  const messageIds = new Set<string>();
  for (const name of names) {
    const text = await readFile(join(dir, name), 'latin1');
    const encrypted = text.includes(ARMOR_HEADER);
    if (encrypted !== target.encrypted) throw new Error(`${target.name}: ${name} is ${encrypted ? '' : 'not '}encrypted`);
    if (!target.encrypted && !text.includes('The quick brown fox')) throw new Error(`${target.name}: ${name} lacks the bench body`);
    const messageId = /^Message-ID:\s*(<[^>]+>)/im.exec(text)?.[1];
    if (!messageId) throw new Error(`${target.name}: ${name} has no Message-ID`);
    messageIds.add(messageId);
  }
  if (messageIds.size !== count) throw new Error(`${target.name}: ${messageIds.size} distinct Message-IDs in ${count} files`);
}

async function countFiles(dir: string): Promise<number> {
  return (await readdir(dir).catch(() => [] as string[])).length;
}

async function emptyDir(dir: string): Promise<void> {
  await Promise.all((await readdir(dir)).map((name) => rm(join(dir, name))));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function buildRecord(settings: Settings, database: BenchRecord['database'], samples: Samples): BenchRecord {
  const recorded = {
    bench: 'postfix',
    rounds: settings.rounds,
    messages_per_turn: settings.messages,
    warmup_messages: settings.warmupMessages,
    sessions: settings.sessions,
    message_bytes: settings.messageBytes,
    recipient: 'one per message, cv25519 key',
    timed: 'first MAIL FROM to the last file in Maildir new/',
  };
  return newRecord(settings.mode, database, recorded, samples.figures());
}

function report(record: BenchRecord, jsonFile: string | undefined): void {
  const header = `${recordTitle('Lacre behind Postfix bench', record)}\n  median over the rounds [min – max]; delivered = injected into Postfix until in the Maildir\n`;
  const table = header + formatTable(record.figures);
  writeRecord(record, table, jsonFile);
}

bench.run(main);
