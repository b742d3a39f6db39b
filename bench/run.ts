/**
 * The Lacre benchmark: `npm run bench [-- --quick] [-- --json FILE]`. See bench/README.md.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { askHelper, killAll, pollRss, readCpuMs, readMemory, startHelper, startLacre, type Child } from './children.js';
import { LoadGenerator, LoadTally } from './load.js';
import { bigMessageStream, SENDER } from './messages.js';
import { addRecipient, createBenchDatabase, type BenchDatabase } from './setup.js';
import { SmtpSession } from './smtp-client.js';
import type { SinkStats } from './sink.js';

interface Settings {
  mode: 'quick' | 'full';
  sessions: number;
  messageBytes: number;
  warmup: number;
  messages: number;
  rounds: number;
  bigMessageBytes: number;
  loadDeadlineMs: number;
  lacreLogLevel: string;
  /** Use embedded PGlite even when a PostgreSQL server answers. */
  embedded: boolean;
}

interface Figure {
  value: number;
  unit: string;
}

type Figures = Record<string, Figure>;

const CV25519_RECIPIENT = 'curve@bench.example';
const RSA_RECIPIENT = 'rsa@bench.example';
const PLAIN_RECIPIENT = 'nokey@bench.example';
const MB = 1_000_000;

function readSettings(): { settings: Settings; jsonFile: string | undefined } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      'lacre-log-level': { type: 'string', default: 'warn' },
      embedded: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: npm run bench -- [--quick] [--json FILE|-] [--embedded] [--lacre-log-level warn|info]\n');
    process.exit(0);
  }
  const quick = values.quick === true;
  const settings: Settings = {
    mode: quick ? 'quick' : 'full',
    sessions: 10,
    messageBytes: 4096,
    warmup: quick ? 100 : 500,
    messages: quick ? 1000 : 5000,
    rounds: quick ? 2 : 5,
    bigMessageBytes: quick ? 50 * MB : 200 * MB,
    loadDeadlineMs: quick ? 120_000 : 600_000,
    lacreLogLevel: values['lacre-log-level']!,
    embedded: values.embedded === true,
  };
  return { settings, jsonFile: values.json };
}

function progress(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

async function main(): Promise<void> {
  const { settings, jsonFile } = readSettings();
  const started = Date.now();
  const cleanups: Array<() => Promise<void>> = [];
  stopOnSignal(cleanups);
  let figures: Figures = {};
  let database: BenchDatabase | undefined;
  try {
    progress(`${settings.mode} run: ${settings.messages} messages per load in ${settings.rounds} rounds (+${settings.warmup} warm-up), big message ${settings.bigMessageBytes / MB} MB`);
    database = await createBenchDatabase({ embedded: settings.embedded });
    const db = database;
    cleanups.push(() => db.remove());
    progress(`database: ${db.kind}; making keys with gpg`);
    await addRecipient(db, CV25519_RECIPIENT, 'cv25519');
    await addRecipient(db, RSA_RECIPIENT, 'rsa3072');

    const sink = await startHelper('sink', {});
    cleanups.push(() => sink.stop());
    const passthrough = await startHelper('passthrough', { BENCH_RELAY_PORT: String(sink.port) });
    cleanups.push(() => passthrough.stop());
    const lacreEnv = { ...db.env, LACRE_RELAY_HOST: '127.0.0.1', LACRE_RELAY_PORT: String(sink.port), LACRE_LOG_LEVEL: settings.lacreLogLevel };
    const lacre = await startLacre(lacreEnv);
    cleanups.push(() => lacre.stop());

    figures = await measureLoads(settings, sink, [
      { name: 'sink_alone', server: sink, recipient: PLAIN_RECIPIENT, encrypts: false },
      { name: 'passthrough', server: passthrough, recipient: PLAIN_RECIPIENT, encrypts: false },
      { name: 'lacre_cv25519', server: lacre, recipient: CV25519_RECIPIENT, encrypts: true },
      { name: 'lacre_rsa3072', server: lacre, recipient: RSA_RECIPIENT, encrypts: true },
    ]);
    figures.lacre_load_peak_rss_mb = { value: readMemory(lacre.pid).peakRssBytes / MB, unit: 'MB' };
    await lacre.stop();

    progress(`one ${settings.bigMessageBytes / MB} MB message`);
    Object.assign(figures, await measureBigPassthrough(settings, passthrough, sink));
    await passthrough.stop();
    Object.assign(figures, await measureBigMessage(settings, lacreEnv, sink));
    figures.big_message_ratio_to_ceiling = { value: figures.big_message_mb_per_s!.value / figures.big_passthrough_mb_per_s!.value, unit: 'ratio' };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => progress(`cleanup failed: ${String(error)}`));
  }
  progress(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  report(settings, database!.kind, figures, jsonFile);
}

/** Ctrl-C or SIGTERM: kill the children at once, then drop the database (bounded in time), then exit. */
let interrupted = false;

function stopOnSignal(cleanups: Array<() => Promise<void>>): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      interrupted = true;
      progress(`${signal}: stopping`);
      killAll();
      const cleaned = Promise.allSettled(cleanups.map((cleanup) => cleanup()));
      void Promise.race([cleaned, new Promise((resolve) => setTimeout(resolve, 5_000))]).then(() => process.exit(130));
    });
  }
}

interface Target {
  name: string;
  /** The process under test: its CPU time is counted per message. */
  server: Child;
  recipient: string;
  /** Every message it relays must reach the sink encrypted. */
  encrypts: boolean;
}

/**
 * Loads every target alike: warm-up first, then `rounds` rounds in which each target in turn sends its share.
 * Interleaving spreads the machine's background noise over all targets, so their ratios stay meaningful.
 */
async function measureLoads(settings: Settings, sink: Child, targets: Target[]): Promise<Figures> {
  const deadline = Date.now() + settings.loadDeadlineMs;
  const generators = new Map<Target, LoadGenerator>();
  const tallies = new Map(targets.map((target) => [target, new LoadTally()]));
  try {
    for (const target of targets) {
      const generator = await LoadGenerator.open({ port: target.server.port, recipient: target.recipient, sessions: settings.sessions, messageBytes: settings.messageBytes, deadline });
      generators.set(target, generator);
      progress(`warm-up ${target.name}`);
      await sendChecked(target, sink, settings.warmup, () => generator.send(settings.warmup));
    }
    const perRound = Math.ceil(settings.messages / settings.rounds);
    for (let round = 0; round < settings.rounds; round++) {
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      for (const target of order) {
        const tally = tallies.get(target)!;
        const cpuBefore = readCpuMs(target.server.pid);
        await sendChecked(target, sink, perRound, () => generators.get(target)!.send(perRound, tally));
        tally.cpuMs += readCpuMs(target.server.pid) - cpuBefore;
      }
      progress(`round ${round + 1}/${settings.rounds}: ${order.map((t) => `${t.name} ${tallies.get(t)!.messagesPerSecond.toFixed(0)}/s`).join(', ')}`);
    }
  } finally {
    for (const generator of generators.values()) await generator.close();
  }
  return loadFigures(targets, tallies);
}

/** Runs one batch and checks that the sink received each message the target accepted (encrypted, if it should be). */
async function sendChecked(target: Target, sink: Child, count: number, send: () => Promise<void>): Promise<void> {
  const before = await askHelper<SinkStats>(sink, 'stats');
  await send();
  const after = await askHelper<SinkStats>(sink, 'stats');
  const received = after.messages - before.messages;
  const encrypted = after.pgpMessages - before.pgpMessages;
  if (received !== count) throw new Error(`${target.name}: ${count} messages accepted, the sink received ${received}`);
  if (target.encrypts && encrypted !== count) throw new Error(`${target.name}: only ${encrypted} of ${count} relayed messages were encrypted`);
  if (!target.encrypts && encrypted !== 0) throw new Error(`${target.name}: ${encrypted} messages arrived encrypted`);
}

function loadFigures(targets: Target[], tallies: Map<Target, LoadTally>): Figures {
  const figures: Figures = {};
  const rate = (name: string) => tallies.get(targets.find((t) => t.name === name)!)!.messagesPerSecond;
  for (const target of targets) {
    const tally = tallies.get(target)!;
    figures[`${target.name}_msgs_per_s`] = { value: tally.messagesPerSecond, unit: 'msg/s' };
    figures[`${target.name}_p50_ms`] = { value: tally.percentileMs(0.5), unit: 'ms' };
    figures[`${target.name}_p99_ms`] = { value: tally.percentileMs(0.99), unit: 'ms' };
    figures[`${target.name}_cpu_ms_per_msg`] = { value: tally.cpuMs / tally.messages, unit: 'ms' };
    if (target.encrypts) figures[`${target.name}_ratio_to_ceiling`] = { value: tally.messagesPerSecond / rate('passthrough'), unit: 'ratio' };
  }
  figures.sink_headroom_over_ceiling = { value: rate('sink_alone') / rate('passthrough'), unit: 'ratio' };
  if (figures.sink_headroom_over_ceiling.value < 1.5) progress('WARNING: the sink alone is less than 1.5x the ceiling; it may be the bottleneck');
  return figures;
}

/** Streams one big message (generated on the fly) through the server on `port`; resolves when it was accepted. */
async function sendBigMessage(settings: Settings, port: number, sink: Child, recipient: string): Promise<{ seconds: number; sunk: SinkStats }> {
  await askHelper(sink, 'reset');
  const session = await SmtpSession.open(port);
  const startedAt = performance.now();
  try {
    const timeoutMs = Math.max(120_000, (settings.bigMessageBytes / MB) * 3_000);
    await session.sendStream(SENDER, recipient, bigMessageStream(recipient, settings.bigMessageBytes), timeoutMs);
  } finally {
    await session.close().catch(() => session.destroy());
  }
  const seconds = (performance.now() - startedAt) / 1000;
  const sunk = await askHelper<SinkStats>(sink, 'stats');
  if (sunk.messages !== 1) throw new Error(`big message: the sink received ${sunk.messages} messages`);
  return { seconds, sunk };
}

/** The big message through the pass-through: what moving the bytes alone costs. */
async function measureBigPassthrough(settings: Settings, passthrough: Child, sink: Child): Promise<Figures> {
  const { seconds, sunk } = await sendBigMessage(settings, passthrough.port, sink, PLAIN_RECIPIENT);
  if (sunk.largestBytes !== settings.bigMessageBytes) throw new Error(`big message: pass-through delivered ${sunk.largestBytes} bytes`);
  progress(`  pass-through: ${(settings.bigMessageBytes / MB / seconds).toFixed(1)} MB/s`);
  return { big_passthrough_mb_per_s: { value: settings.bigMessageBytes / MB / seconds, unit: 'MB/s' } };
}

/**
 * A fresh `lacre serve` (so VmHWM is this message's peak, not the load's) encrypts the big message to the
 * cv25519 recipient while its RSS is polled.
 */
async function measureBigMessage(settings: Settings, lacreEnv: Record<string, string>, sink: Child): Promise<Figures> {
  const lacre = await startLacre(lacreEnv);
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const idle = readMemory(lacre.pid).rssBytes;
    const rss = pollRss(lacre.pid);
    const { seconds, sunk } = await sendBigMessage(settings, lacre.port, sink, CV25519_RECIPIENT).finally(() => rss.stop());
    const peak = Math.max(readMemory(lacre.pid).peakRssBytes, rss.stop());
    if (sunk.pgpMessages !== 1) throw new Error('big message: it reached the sink unencrypted');
    const outputRatio = sunk.largestBytes / settings.bigMessageBytes;
    if (outputRatio < 1.3 || outputRatio > 1.45) throw new Error(`big message: output is ${outputRatio.toFixed(3)}x the input, expected ~1.35x (armor)`);
    progress(`  lacre: ${(settings.bigMessageBytes / MB / seconds).toFixed(1)} MB/s, peak RSS ${(peak / MB).toFixed(0)} MB (idle ${(idle / MB).toFixed(0)} MB)`);
    return {
      big_message_mb: { value: settings.bigMessageBytes / MB, unit: 'MB' },
      big_message_mb_per_s: { value: settings.bigMessageBytes / MB / seconds, unit: 'MB/s' },
      big_message_idle_rss_mb: { value: idle / MB, unit: 'MB' },
      big_message_peak_rss_mb: { value: peak / MB, unit: 'MB' },
      big_message_rss_growth_mb: { value: (peak - idle) / MB, unit: 'MB' },
      big_message_output_ratio: { value: outputRatio, unit: 'ratio' },
    };
  } finally {
    await lacre.stop();
  }
}

function report(settings: Settings, database: string, figures: Figures, jsonFile: string | undefined): void {
  const record = {
    commit: gitCommit(),
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', node: process.version },
    mode: settings.mode,
    database,
    settings: {
      sessions: settings.sessions,
      message_bytes: settings.messageBytes,
      warmup: settings.warmup,
      messages: settings.messages,
      rounds: settings.rounds,
      big_message_bytes: settings.bigMessageBytes,
      lacre_log_level: settings.lacreLogLevel,
    },
    figures: Object.fromEntries(Object.entries(figures).map(([name, figure]) => [name, { value: round(figure.value), unit: figure.unit }])),
  };
  const table = formatTable(record.figures);
  const header = `Lacre bench (${settings.mode}) ${record.commit} ${record.date} — ${record.machine.cpus}× ${record.machine.model}, node ${record.machine.node}, database ${database}\n`;
  if (jsonFile === '-') {
    process.stderr.write(header + table);
    process.stdout.write(`${JSON.stringify(record, null, 2)}\n`);
    return;
  }
  process.stdout.write(header + table);
  if (jsonFile) writeFileSync(jsonFile, `${JSON.stringify(record, null, 2)}\n`);
  else process.stdout.write(`${JSON.stringify(record)}\n`);
}

function formatTable(figures: Figures): string {
  const rows = Object.entries(figures).map(([name, { value, unit }]) => [name, String(value), unit] as const);
  const width = Math.max(...rows.map(([name]) => name.length));
  const valueWidth = Math.max(...rows.map(([, value]) => value.length));
  return rows.map(([name, value, unit]) => `  ${name.padEnd(width)}  ${value.padStart(valueWidth)} ${unit}`).join('\n') + '\n';
}

function round(value: number): number {
  return Number(value.toPrecision(value >= 100 ? 5 : 3));
}

function gitCommit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    if (interrupted) return; // the signal handler exits once it has cleaned up
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
