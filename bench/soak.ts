/**
 * The soak: `npm run soak -- [--minutes N] [--rate R] [--quick] [--embedded]` (default 10 minutes at 8 messages/s;
 * --quick is 1 minute, for trying).
 *
 *   soak ──SMTP──▶ Postfix smtpd ─▶ queue ─▶ `lacre` smtp transport ─▶ lacre serve ─▶ counting sink (this process)
 *
 * A steady rate of mixed messages (2–40 KiB, every 50th 300 KiB so the streaming path runs too; one, two or three
 * recipients) while keys change in parallel through lacre serve's admin socket: dave's key is replaced (new key
 * imported, old one disabled), erin gets keys that expire 30 s after they are made, frank's key is disabled and
 * restored, and new addresses get keys. Every 5 s lacre serve's /metrics is read (RSS, lacre_errors_total).
 *
 * Prints one table (minute | sent | delivered | errors | RSS) and a verdict:
 * - every message accounted for: each recipient of each message got at least one copy once Postfix drained;
 * - alice (a key that never changes) never got plaintext, carol (never a key) never got ciphertext;
 * - no growth of errors: lacre_errors_total grows no faster in the second half than in the first, key changes
 *   and submissions all succeeded;
 * - RSS within bounds: peak ≤ 512 MiB, and (runs of 3 minutes or more) the last minute's peak at most 64 MiB
 *   above the first minute's.
 * Exits 1 when the verdict fails. Needs root (private Postfix), gpg, and PostgreSQL on 127.0.0.1:5432 (else the
 * embedded database).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import nodemailer, { type Transporter } from 'nodemailer';
import { createGpgHome, generateKey, type GpgHome, type GpgKey } from '../test/helpers/gpg.js';
import { LacreServer, runLacre } from '../test/helpers/lacre.js';
import { startPostfix } from '../test/helpers/postfix.js';
import { SmtpSink } from '../test/helpers/smtp-sink.js';
import { BenchLifecycle } from './lifecycle.js';
import { createBenchDatabase } from './setup.js';

const DOMAIN = 'example.test';
const SENDER = 'soak@example.org';
const STABLE = `alice@${DOMAIN}`;
const KEYLESS = `carol@${DOMAIN}`;
const REPLACED = `dave@${DOMAIN}`;
const EXPIRING = `erin@${DOMAIN}`;
const TOGGLED = `frank@${DOMAIN}`;
const PGP = Buffer.from('-----BEGIN PGP MESSAGE-----');
const SAMPLE_EVERY_MS = 5_000;
const CHURN_EVERY_MS = 3_000;
const MAX_IN_FLIGHT = 64;
const MAX_MESSAGES = 20_000;
const DRAIN_TIMEOUT_MS = 180_000;
const RSS_LIMIT_MIB = 512;
const RSS_GROWTH_LIMIT_MIB = 64;
const MIB = 1024 * 1024;

interface Settings {
  minutes: number;
  rate: number;
  embedded: boolean;
}

function readSettings(): Settings {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '10' },
      rate: { type: 'string', default: '8' },
      quick: { type: 'boolean', default: false },
      embedded: { type: 'boolean', default: false },
    },
  });
  const minutes = values.quick ? 1 : Number(values.minutes);
  const rate = Number(values.rate);
  if (!(minutes > 0 && minutes <= 120)) throw new Error('--minutes: more than 0, at most 120');
  if (!(rate > 0 && rate <= 100)) throw new Error('--rate: messages per second, up to 100');
  return { minutes, rate, embedded: values.embedded };
}

/** One minute's row; `rssMiB` is the highest RSS sampled in it. */
interface Minute {
  sent: number;
  delivered: number;
  errors: number;
  rssMiB: number;
}

class Timeline {
  readonly minutes: Minute[] = [];
  /** Minute 1 starts with the load, not with the set-up. */
  startedAt = Date.now();

  now(): Minute {
    const index = Math.floor((Date.now() - this.startedAt) / 60_000);
    while (this.minutes.length <= index) this.minutes.push({ sent: 0, delivered: 0, errors: 0, rssMiB: 0 });
    return this.minutes[index]!;
  }
}

// ---- the counting sink ----

interface Expected {
  recipients: Set<string>;
  seen: Set<string>;
}

/** What Lacre relayed: copies per message and recipient, checked for ciphertext, bodies dropped at once. */
class CountingSink {
  private readonly expected = new Map<string, Expected>();
  private readonly sink = new SmtpSink();
  copies = 0;
  duplicates = 0;
  plaintextToStable = 0;
  encryptedToKeyless = 0;
  encryptedToChanging = 0;

  constructor(private readonly timeline: Timeline) {}

  expect(messageId: string, recipients: readonly string[]): void {
    this.expected.set(messageId, { recipients: new Set(recipients), seen: new Set() });
  }

  missing(): string[] {
    return [...this.expected].flatMap(([id, { recipients, seen }]) => [...recipients].filter((r) => !seen.has(r)).map((r) => `${id} ${r}`));
  }

  get port(): number {
    return this.sink.port;
  }

  start(): Promise<void> {
    return this.sink.listen({
      keep: false,
      maxClients: 1000,
      onMessage: (message) => this.count(message.data, message.to.map((address) => address.toLowerCase())),
    });
  }

  stop(): Promise<void> {
    return this.sink.stop();
  }

  private count(data: Buffer, recipients: string[]): void {
    const headerEnd = data.indexOf('\r\n\r\n');
    const id = /^Message-ID: <([^>]+)>/im.exec(data.subarray(0, headerEnd).toString('latin1'))?.[1];
    const entry = id === undefined ? undefined : this.expected.get(id);
    if (!entry) return;
    const encrypted = data.includes(PGP);
    for (const recipient of recipients) this.countCopy(entry, recipient, encrypted);
  }

  private countCopy(entry: Expected, recipient: string, encrypted: boolean): void {
    this.copies += 1;
    if (recipient === STABLE && !encrypted) this.plaintextToStable += 1;
    else if (recipient === KEYLESS && encrypted) this.encryptedToKeyless += 1;
    else if (encrypted && recipient !== STABLE) this.encryptedToChanging += 1;
    if (entry.seen.has(recipient)) {
      this.duplicates += 1;
      return;
    }
    entry.seen.add(recipient);
    if (entry.seen.size === entry.recipients.size) this.timeline.now().delivered += 1;
  }
}

// ---- the load ----

const RECIPIENT_MIXES: readonly (readonly string[])[] = [
  [STABLE],
  [KEYLESS],
  [REPLACED],
  [EXPIRING, KEYLESS],
  [TOGGLED],
  [STABLE, REPLACED, TOGGLED],
  [KEYLESS, EXPIRING],
];

function soakMessage(index: number, messageId: string, to: readonly string[]): Buffer {
  const size = index % 50 === 0 ? 300 * 1024 : 2048 + (index % 20) * 2048;
  const line = `soak line ${index} ${'y'.repeat(64)}\r\n`;
  const headers = [
    `From: Soak <${SENDER}>`,
    `To: ${to.join(', ')}`,
    `Subject: soak ${index}`,
    `Message-ID: <${messageId}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
  ];
  return Buffer.from(`${headers.join('\r\n')}\r\n\r\n${line.repeat(Math.ceil(size / line.length))}`, 'latin1');
}

interface LoadResult {
  sent: number;
  submitFailures: number;
}

/** Sends `total` messages at `rate` per second into Postfix; resolves once every submission has settled. */
async function runLoad(port: number, total: number, rate: number, sink: CountingSink, timeline: Timeline): Promise<LoadResult> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, pool: true, maxConnections: 8, maxMessages: Infinity });
  const result: LoadResult = { sent: 0, submitFailures: 0 };
  const inFlight = new Set<Promise<void>>();
  const startedAt = Date.now();
  try {
    for (let index = 0; index < total; index += 1) {
      const due = startedAt + (index * 1000) / rate;
      if (due > Date.now()) await sleep(due - Date.now());
      while (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
      const sending = submit(transport, index, sink, timeline, result);
      inFlight.add(sending);
      void sending.finally(() => inFlight.delete(sending));
    }
    await Promise.all(inFlight);
  } finally {
    transport.close();
  }
  return result;
}

async function submit(transport: Transporter, index: number, sink: CountingSink, timeline: Timeline, result: LoadResult): Promise<void> {
  const to = RECIPIENT_MIXES[index % RECIPIENT_MIXES.length]!;
  const messageId = `soak-${index}@example.org`;
  sink.expect(messageId, to);
  try {
    await transport.sendMail({ envelope: { from: SENDER, to: [...to] }, raw: soakMessage(index, messageId, to) });
    result.sent += 1;
    timeline.now().sent += 1;
  } catch {
    result.submitFailures += 1;
    timeline.now().errors += 1;
    sink.expect(messageId, []);
  }
}

// ---- the key changes ----

/** Changes keys through lacre serve's admin socket, one change every CHURN_EVERY_MS, until stopped. */
class KeyChurn {
  changes = 0;
  failures = 0;
  private step = 0;
  private replacedKey: GpgKey | undefined;
  private toggledDisabled = false;
  private stopped = false;

  constructor(
    private readonly home: GpgHome,
    private readonly adminEnv: NodeJS.ProcessEnv,
    private readonly scratch: string,
    private readonly toggledKey: GpgKey,
  ) {}

  async run(): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      try {
        await this.nextChange();
        this.changes += 1;
      } catch (error) {
        this.failures += 1;
        process.stderr.write(`soak: key change failed: ${String(error)}\n`);
      }
      await sleep(Math.max(0, CHURN_EVERY_MS - (Date.now() - started)));
    }
  }

  stop(): void {
    this.stopped = true;
  }

  private async nextChange(): Promise<void> {
    this.step += 1;
    switch (this.step % 4) {
      case 0:
        return this.replace();
      case 1:
        return this.importKey(await generateKey(this.home, { email: EXPIRING, expire: 'seconds=30' }));
      case 2:
        return this.toggle();
      default:
        return this.importKey(await generateKey(this.home, { email: `new${this.step}@${DOMAIN}` }));
    }
  }

  private async replace(): Promise<void> {
    const next = await generateKey(this.home, { email: REPLACED });
    await this.importKey(next);
    if (this.replacedKey) await this.keys(['disable', this.replacedKey.fingerprint]);
    this.replacedKey = next;
  }

  private async toggle(): Promise<void> {
    await this.keys(this.toggledDisabled ? ['restore', this.toggledKey.fingerprint] : ['disable', this.toggledKey.fingerprint]);
    this.toggledDisabled = !this.toggledDisabled;
  }

  async importKey(key: GpgKey): Promise<void> {
    const file = join(this.scratch, `${key.fingerprint}.asc`);
    await writeFile(file, key.publicArmored, { mode: 0o600 });
    await this.keys(['import', file]);
  }

  private async keys(args: string[]): Promise<void> {
    const result = await runLacre(['keys', ...args], this.adminEnv);
    if (result.code !== 0) throw new Error(`lacre keys ${args[0]}: ${result.stderr.trim()}`);
  }
}

// ---- sampling lacre serve ----

interface Scrape {
  rssBytes: number;
  errors: number;
}

async function scrapeMetrics(httpPort: number): Promise<Scrape> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let rssBytes = 0;
  let errors = 0;
  for (const line of text.split('\n')) {
    const [name, value] = line.split(/\s+(?=[^\s]+$)/);
    if (name === 'process_resident_memory_bytes') rssBytes = Number(value);
    else if (name?.startsWith('lacre_errors_total')) errors += Number(value);
  }
  return { rssBytes, errors };
}

/** Samples every SAMPLE_EVERY_MS into the timeline; stop() takes a last sample and resolves with the error total. */
function startSampler(httpPort: number, timeline: Timeline): { stop(): Promise<number> } {
  let lastErrors = 0;
  const sample = async (): Promise<void> => {
    const { rssBytes, errors } = await scrapeMetrics(httpPort);
    const minute = timeline.now();
    minute.rssMiB = Math.max(minute.rssMiB, rssBytes / MIB);
    minute.errors += errors - lastErrors;
    lastErrors = errors;
  };
  const timer = setInterval(() => void sample().catch(() => (timeline.now().errors += 1)), SAMPLE_EVERY_MS);
  return {
    async stop() {
      clearInterval(timer);
      await sample();
      return lastErrors;
    },
  };
}

// ---- the report ----

interface Outcome {
  settings: Settings;
  load: LoadResult;
  sink: CountingSink;
  churn: KeyChurn;
  missing: string[];
  drainSeconds: number;
  lacreErrors: number;
}

function table(minutes: readonly Minute[], loadMinutes: number): string {
  const label = (i: number): string => (i < Math.ceil(loadMinutes) ? String(i + 1) : `${i + 1} (drain)`);
  const rows = minutes.map((m, i) => `| ${label(i)} | ${m.sent} | ${m.delivered} | ${m.errors} | ${m.rssMiB.toFixed(0)} MiB |`);
  return ['| minute | sent | delivered | errors | RSS |', '| ---: | ---: | ---: | ---: | ---: |', ...rows].join('\n');
}

function verdict(outcome: Outcome, minutes: readonly Minute[]): string[] {
  const failures: string[] = [];
  const { sink, load, churn, missing } = outcome;
  if (missing.length > 0) failures.push(`${missing.length} recipient copies never arrived, e.g. ${missing.slice(0, 3).join('; ')}`);
  if (sink.plaintextToStable > 0) failures.push(`${sink.plaintextToStable} plaintext copies to ${STABLE}, whose key never changed`);
  if (sink.encryptedToKeyless > 0) failures.push(`${sink.encryptedToKeyless} encrypted copies to ${KEYLESS}, who has no key`);
  if (load.submitFailures > 0) failures.push(`${load.submitFailures} submissions to Postfix failed`);
  if (churn.failures > 0) failures.push(`${churn.failures} key changes failed`);
  const half = Math.ceil(minutes.length / 2);
  const errorsIn = (part: readonly Minute[]): number => part.reduce((sum, m) => sum + m.errors, 0);
  if (minutes.length > 1 && errorsIn(minutes.slice(half)) > errorsIn(minutes.slice(0, half))) failures.push('errors grew in the second half');
  const peak = Math.max(...minutes.map((m) => m.rssMiB));
  if (peak > RSS_LIMIT_MIB) failures.push(`peak RSS ${peak.toFixed(0)} MiB > ${RSS_LIMIT_MIB} MiB`);
  const loaded = minutes.slice(0, Math.ceil(outcome.settings.minutes));
  // An unread RSS (the metrics never scraped) would pass both RSS bounds below.
  const unsampled = loaded.filter((m) => m.rssMiB === 0).length;
  if (unsampled > 0) failures.push(`${unsampled} minute(s) of the load without an RSS sample: the bounds cannot be checked`);
  const growth = loaded.length >= 3 ? loaded.at(-1)!.rssMiB - loaded[0]!.rssMiB : 0;
  if (growth > RSS_GROWTH_LIMIT_MIB) failures.push(`RSS grew ${growth.toFixed(0)} MiB from the first minute to the last (> ${RSS_GROWTH_LIMIT_MIB})`);
  return failures;
}

function report(outcome: Outcome, minutes: readonly Minute[]): boolean {
  const { settings, load, sink, churn } = outcome;
  const failures = verdict(outcome, minutes);
  const summary = [
    `Soak: ${settings.minutes} min at ${settings.rate} messages/s; ${load.sent} messages sent, ${sink.copies} recipient copies relayed ` +
      `(${sink.duplicates} duplicates), ${outcome.missing.length} missing; drained ${outcome.drainSeconds.toFixed(0)} s after the last submission.`,
    `Key changes in parallel: ${churn.changes} (${churn.failures} failed); ${sink.encryptedToChanging} encrypted copies to the changing recipients; ` +
      `lacre_errors_total ${outcome.lacreErrors}.`,
    `Bounds: every copy delivered, no plaintext to ${STABLE}, errors not growing, RSS ≤ ${RSS_LIMIT_MIB} MiB and ≤ ${RSS_GROWTH_LIMIT_MIB} MiB growth over the run.`,
    failures.length === 0 ? 'Verdict: PASS' : `Verdict: FAIL\n- ${failures.join('\n- ')}`,
  ];
  process.stdout.write(`${table(minutes, settings.minutes)}\n\n${summary.join('\n')}\n`);
  return failures.length === 0;
}

// ---- the run ----

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForDrain(sink: CountingSink, queueEmpty: () => Promise<boolean>): Promise<string[]> {
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  for (;;) {
    const missing = sink.missing();
    if ((missing.length === 0 && (await queueEmpty())) || Date.now() > deadline) return missing;
    await sleep(500);
  }
}

async function main(lifecycle: BenchLifecycle): Promise<void> {
  const settings = readSettings();
  const total = Math.min(MAX_MESSAGES, Math.round(settings.minutes * 60 * settings.rate));
  const database = await createBenchDatabase({ embedded: settings.embedded });
  lifecycle.onCleanup(() => database.remove());
  lifecycle.progress(`database: ${database.kind}; ${total} messages over ${settings.minutes} min`);
  const home = await createGpgHome();
  lifecycle.onCleanup(() => home.remove());
  const [stableKey, toggledKey] = [await generateKey(home, { email: STABLE }), await generateKey(home, { email: TOGGLED })];

  const timeline = new Timeline();
  const sink = new CountingSink(timeline);
  await sink.start();
  lifecycle.onCleanup(() => sink.stop());
  const cwd = join(database.scratch, 'serve');
  await mkdir(cwd, { mode: 0o700 });
  const adminSocket = join(cwd, 'admin.sock');
  const serve = await LacreServer.start(
    { ...database.env, LACRE_RELAY_PORT: String(sink.port), LACRE_ADMIN_SOCKET: adminSocket, LACRE_LOG_LEVEL: 'info' },
    { cwd },
  );
  lifecycle.onCleanup(() => serve.stop());
  const postfix = await startPostfix({ filterPort: serve.port, mailboxes: ['alice', 'carol', 'dave', 'erin', 'frank'] });
  lifecycle.onCleanup(() => postfix.stop());

  const churn = new KeyChurn(home, { ...database.env, LACRE_ADMIN_SOCKET: adminSocket }, database.scratch, toggledKey);
  await churn.importKey(stableKey);
  await churn.importKey(toggledKey);
  const sampler = startSampler(serve.httpPort, timeline);
  const churning = churn.run();
  lifecycle.progress(`lacre serve on ${serve.port}, Postfix on ${postfix.smtpPort}; load starts`);
  timeline.startedAt = Date.now();
  const load = await runLoad(postfix.smtpPort, total, settings.rate, sink, timeline);
  churn.stop();
  await churning;
  const loadEnded = Date.now();
  lifecycle.progress(`load sent (${load.sent}); draining`);
  const missing = await waitForDrain(sink, async () => (await postfix.queue()).length === 0);
  const lacreErrors = await sampler.stop();
  const outcome: Outcome = { settings, load, sink, churn, missing, drainSeconds: (Date.now() - loadEnded) / 1000, lacreErrors };
  const passed = report(outcome, timeline.minutes);
  await lifecycle.cleanUp();
  if (!passed) throw new Error('the soak failed its verdict');
}

const lifecycle = new BenchLifecycle('soak', 20_000);
lifecycle.run(() => main(lifecycle));
