/**
 * The Lacre benchmark: `npm run bench [-- --quick] [-- --json FILE] [-- --history FILE]`. See bench/README.md.
 */
import { parseArgs } from 'node:util';
import { measureBigMessages, MB } from './big.js';
import { askHelper, readCpuMs, readMemory, startHelper, startLacre, type Child } from './children.js';
import { BenchLifecycle } from './lifecycle.js';
import { LoadGenerator, LoadTally } from './load.js';
import { measureKeyLookups } from './lookup.js';
import { appendToHistory, formatTable, newRecord, recordTitle, writeRecord, type BenchRecord } from './record.js';
import { createBenchDatabase, fillKeyStore, importKeys, makeKeys, withDatabase, type BenchDatabase, type KeySpec } from './setup.js';
import type { SinkStats } from './sink.js';
import { Samples } from './stats.js';

const SECTIONS = ['loads', 'recipients', 'lookup', 'big'] as const;
type Section = (typeof SECTIONS)[number];

interface Settings {
  mode: 'quick' | 'full';
  sections: Section[];
  rounds: number;
  messageBytes: number;
  /** Concurrent SMTP sessions of each load. */
  concurrency: number[];
  /**
   * One target's turn in a round: messages are sent for `windowMs` (none starts later; those in flight finish),
   * at most `maxMessages`. Equal windows give every target, fast or slow, the same exposure to machine noise.
   */
  batch: { windowMs: number; maxMessages: number };
  /**
   * Before the rounds, each target is loaded this long (not measured): `first` before the first load of a process
   * (JIT, key cache), `next` before each later one (pools growing to the new concurrency).
   */
  warmupMs: { first: number; next: number };
  /** Keyed recipients per message in the per-recipient cost loads (at `recipientSessions` sessions). */
  recipientCounts: number[];
  recipientSessions: number;
  bigMessages: ReadonlyArray<{ bytes: number; rounds: number }>;
  keyStoreSize: number;
  lookupsPerRound: number;
  warmLookupPasses: number;
  /** The whole run fails past this many ms: every load and loop is bounded in time as well as in count. */
  deadlineMs: number;
  lacreLogLevel: string;
  /** Use embedded PGlite even when a PostgreSQL server answers. */
  embedded: boolean;
}

const CV25519_RECIPIENT = 'curve@bench.example';
const RSA_RECIPIENT = 'rsa@bench.example';
const PLAIN_RECIPIENT = 'nokey@bench.example';
const recipientAddress = (n: number) => `rcpt${String(n).padStart(2, '0')}@bench.example`;

function readSettings(): { settings: Settings; jsonFile: string | undefined; historyFile: string | undefined } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      history: { type: 'string' },
      only: { type: 'string' },
      'lacre-log-level': { type: 'string', default: 'warn' },
      embedded: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench -- [--quick] [--json FILE|-] [--history FILE] [--only loads,recipients,lookup,big] [--embedded] [--lacre-log-level warn|info]\n',
    );
    process.exit(0);
  }
  const quick = values.quick === true;
  const settings: Settings = {
    mode: quick ? 'quick' : 'full',
    sections: parseSections(values.only),
    rounds: quick ? 3 : 5,
    messageBytes: 4096,
    // 10 first: more messages per second warm the JIT faster than 1 session would.
    concurrency: [10, 50, 1],
    batch: quick ? { windowMs: 300, maxMessages: 5_000 } : { windowMs: 3_000, maxMessages: 30_000 },
    warmupMs: quick ? { first: 600, next: 200 } : { first: 3_000, next: 1_000 },
    recipientCounts: [1, 5, 20],
    recipientSessions: 10,
    bigMessages: quick
      ? [
          { bytes: 10 * MB, rounds: 2 },
          { bytes: 200 * MB, rounds: 1 },
        ]
      : [
          { bytes: 10 * MB, rounds: 5 },
          { bytes: 200 * MB, rounds: 3 },
        ],
    keyStoreSize: 100_000,
    lookupsPerRound: quick ? 50 : 500,
    warmLookupPasses: 20,
    deadlineMs: quick ? 240_000 : 1_800_000,
    lacreLogLevel: values['lacre-log-level']!,
    embedded: values.embedded === true,
  };
  return { settings, jsonFile: values.json, historyFile: values.history };
}

function parseSections(only: string | undefined): Section[] {
  if (only === undefined) return [...SECTIONS];
  const wanted = only.split(',').map((name) => name.trim());
  const unknown = wanted.filter((name) => !(SECTIONS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`--only: unknown section(s) ${unknown.join(', ')}; known: ${SECTIONS.join(', ')}`);
  return SECTIONS.filter((section) => wanted.includes(section));
}

const bench = new BenchLifecycle('bench', 5_000);
const progress = bench.progress;

async function main(): Promise<void> {
  const { settings, jsonFile, historyFile } = readSettings();
  const deadline = bench.startedAt + settings.deadlineMs;
  const runs = (section: Section) => settings.sections.includes(section);
  const samples = new Samples();
  let database: BenchDatabase | undefined;
  try {
    progress(`${settings.mode} run (${settings.sections.join(', ')}), ${settings.rounds} rounds`);
    database = await createBenchDatabase({ embedded: settings.embedded });
    const db = database;
    bench.onCleanup(() => db.remove());
    await prepareKeys(db, settings);

    if (runs('lookup')) {
      if (db.kind === 'postgres') {
        progress(`key lookups: ${settings.lookupsPerRound} per kind and round, ${settings.keyStoreSize} addresses in the store`);
        await measureKeyLookups(
          db,
          { storeSize: settings.keyStoreSize, rounds: settings.rounds, lookupsPerRound: settings.lookupsPerRound, concurrency: 10, warmPasses: settings.warmLookupPasses, deadline },
          samples,
        );
      } else progress('key lookups: skipped (they are measured on a PostgreSQL server only)');
    }

    const sink = await startHelper('sink', {});
    bench.onCleanup(() => sink.stop());
    const passthrough = await startHelper('passthrough', { BENCH_RELAY_PORT: String(sink.port) });
    bench.onCleanup(() => passthrough.stop());
    const lacreEnv = { ...db.env, LACRE_RELAY_HOST: '127.0.0.1', LACRE_RELAY_PORT: String(sink.port), LACRE_LOG_LEVEL: settings.lacreLogLevel };

    if (runs('loads') || runs('recipients')) {
      const lacre = await startLacre(lacreEnv);
      bench.onCleanup(() => lacre.stop());
      if (runs('loads')) {
        await measureConcurrencyLoads(settings, deadline, sink, passthrough, lacre, samples);
        samples.add('lacre_load_peak_rss_mb', 'MB', readMemory(lacre.pid).peakRssBytes / MB);
      }
      if (runs('recipients')) await measureRecipientCost(settings, deadline, sink, lacre, samples);
      await lacre.stop();
    }

    if (runs('big')) {
      progress(`big messages: ${settings.bigMessages.map(({ bytes, rounds }) => `${bytes / MB} MB x${rounds}`).join(', ')}`);
      await measureBigMessages(
        { sizes: settings.bigMessages },
        { passthrough, sink, lacreEnv, recipient: CV25519_RECIPIENT, plainRecipient: PLAIN_RECIPIENT },
        samples,
        progress,
      );
    }
  } finally {
    await bench.cleanUp();
  }
  progress(`done in ${((Date.now() - bench.startedAt) / 1000).toFixed(1)} s`);
  const record = buildRecord(settings, database!.kind, samples);
  report(record, jsonFile, historyFile);
}

/**
 * gpg makes the keys (one cv25519 and one RSA-3072 recipient, plus one cv25519 key per recipient of the
 * per-recipient loads); Lacre's key store imports them; on PostgreSQL the store is then filled to
 * `keyStoreSize` addresses with those keys, so every load runs against a large store.
 */
async function prepareKeys(database: BenchDatabase, settings: Settings): Promise<void> {
  const maxRecipients = Math.max(...settings.recipientCounts);
  const specs: KeySpec[] = [
    { email: RSA_RECIPIENT, algo: 'rsa3072' },
    { email: CV25519_RECIPIENT, algo: 'cv25519' },
    ...Array.from({ length: maxRecipients }, (_, i): KeySpec => ({ email: recipientAddress(i + 1), algo: 'cv25519' })),
  ];
  progress(`database: ${database.kind}; making ${specs.length} keys with gpg`);
  const keys = await makeKeys(specs);
  await withDatabase(database, async (db) => {
    await importKeys(db, keys);
    if (database.kind === 'postgres') {
      const fillStarted = performance.now();
      await fillKeyStore(db, settings.keyStoreSize);
      progress(`key store: ${settings.keyStoreSize} more addresses in ${((performance.now() - fillStarted) / 1000).toFixed(1)} s`);
    }
  });
}

interface Target {
  name: string;
  /** The process under test: its CPU time is counted per message. */
  server: Child;
  recipients: readonly string[];
  /** Every message it relays must reach the sink encrypted. */
  encrypts: boolean;
  /** Messages the sink receives per message sent: Lacre relays one copy per keyed recipient. */
  copies: number;
}

interface RoundResult {
  tally: LoadTally;
}

/**
 * Each concurrency level loads the sink alone, the pass-through and Lacre (cv25519, RSA-3072) alike: warm-up
 * first, then `rounds` rounds in which each target in turn sends its share, the order rotating. Interleaving
 * spreads the machine's background noise over all targets, so ratios taken within a round stay meaningful.
 */
async function measureConcurrencyLoads(settings: Settings, deadline: number, sink: Child, passthrough: Child, lacre: Child, samples: Samples): Promise<void> {
  for (const [level, sessions] of settings.concurrency.entries()) {
    const targets: Target[] = [
      { name: 'sink_alone', server: sink, recipients: [PLAIN_RECIPIENT], encrypts: false, copies: 1 },
      { name: 'passthrough', server: passthrough, recipients: [PLAIN_RECIPIENT], encrypts: false, copies: 1 },
      { name: 'lacre_cv25519', server: lacre, recipients: [CV25519_RECIPIENT], encrypts: true, copies: 1 },
      { name: 'lacre_rsa3072', server: lacre, recipients: [RSA_RECIPIENT], encrypts: true, copies: 1 },
    ];
    progress(`${sessions} session(s)`);
    const warmupMs = level === 0 ? settings.warmupMs.first : settings.warmupMs.next;
    await runRounds(settings, deadline, sink, targets, sessions, warmupMs, (round) => {
      const c = `c${sessions}`;
      for (const [target, { tally }] of round) {
        samples.add(`${target.name}_${c}_msgs_per_s`, 'msg/s', tally.messagesPerSecond);
        samples.add(`${target.name}_${c}_p50_ms`, 'ms', tally.percentileMs(0.5));
        samples.add(`${target.name}_${c}_p99_ms`, 'ms', tally.percentileMs(0.99));
        samples.add(`${target.name}_${c}_cpu_ms_per_msg`, 'ms', tally.cpuMsPerMessage);
      }
      const ceiling = resultOf(round, 'passthrough').tally;
      for (const name of ['lacre_cv25519', 'lacre_rsa3072']) {
        const tally = resultOf(round, name).tally;
        samples.add(`${name}_${c}_ratio_to_ceiling`, 'ratio', tally.messagesPerSecond / ceiling.messagesPerSecond);
        samples.add(`${name}_${c}_p99_added_ms`, 'ms', tally.percentileMs(0.99) - ceiling.percentileMs(0.99));
      }
      const headroom = resultOf(round, 'sink_alone').tally.messagesPerSecond / ceiling.messagesPerSecond;
      samples.add(`sink_${c}_headroom_over_ceiling`, 'ratio', headroom);
      if (headroom < 1.5) progress(`WARNING: at ${sessions} session(s) the sink alone is only ${headroom.toFixed(2)}x the ceiling; it may set the pace`);
    });
  }
}

/** Lacre with 1, 5, 20 keyed (cv25519, one key each) recipients per message: what each extra recipient costs. */
async function measureRecipientCost(settings: Settings, deadline: number, sink: Child, lacre: Child, samples: Samples): Promise<void> {
  const targets: Target[] = settings.recipientCounts.map((count) => ({
    name: `recipients_${count}`,
    server: lacre,
    recipients: Array.from({ length: count }, (_, i) => recipientAddress(i + 1)),
    encrypts: true,
    copies: count,
  }));
  const fewest = Math.min(...settings.recipientCounts);
  const most = Math.max(...settings.recipientCounts);
  progress(`recipients per message: ${settings.recipientCounts.join(', ')}; ${settings.recipientSessions} sessions`);
  await runRounds(settings, deadline, sink, targets, settings.recipientSessions, settings.warmupMs.next, (round) => {
    for (const [target, { tally }] of round) {
      const count = target.recipients.length;
      samples.add(`${target.name}_msgs_per_s`, 'msg/s', tally.messagesPerSecond);
      samples.add(`${target.name}_ms_per_msg`, 'ms', 1000 / tally.messagesPerSecond);
      samples.add(`${target.name}_ms_per_recipient`, 'ms', 1000 / tally.messagesPerSecond / count);
      samples.add(`${target.name}_cpu_ms_per_msg`, 'ms', tally.cpuMsPerMessage);
      samples.add(`${target.name}_p50_ms`, 'ms', tally.percentileMs(0.5));
    }
    const [one, many] = [resultOf(round, `recipients_${fewest}`).tally, resultOf(round, `recipients_${most}`).tally];
    samples.add('recipient_extra_ms', 'ms', (1000 / many.messagesPerSecond - 1000 / one.messagesPerSecond) / (most - fewest));
    samples.add('recipient_extra_cpu_ms', 'ms', (many.cpuMsPerMessage - one.cpuMsPerMessage) / (most - fewest));
  });
}

function resultOf(round: Map<Target, RoundResult>, name: string): RoundResult {
  for (const [target, result] of round) if (target.name === name) return result;
  throw new Error(`no result for ${name}`);
}

/** Warm-up, then `rounds` interleaved rounds; `onRound` gets each round's tallies, in target order. */
async function runRounds(
  settings: Settings,
  deadline: number,
  sink: Child,
  targets: Target[],
  sessions: number,
  warmupMs: number,
  onRound: (round: Map<Target, RoundResult>) => void,
): Promise<void> {
  const generators = new Map<Target, LoadGenerator>();
  try {
    for (const target of targets) {
      const generator = await LoadGenerator.open({ port: target.server.port, recipients: target.recipients, sessions, messageBytes: settings.messageBytes, deadline });
      generators.set(target, generator);
      await sendChecked(target, sink, () => generator.send({ windowMs: warmupMs, maxMessages: settings.batch.maxMessages }));
    }
    for (let round = 0; round < settings.rounds; round++) {
      const results = new Map<Target, RoundResult>(targets.map((target) => [target, { tally: new LoadTally() }]));
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      for (const target of order) {
        const tally = results.get(target)!.tally;
        const cpuBefore = readCpuMs(target.server.pid);
        await sendChecked(target, sink, () => generators.get(target)!.send(settings.batch, tally));
        tally.cpuMs = readCpuMs(target.server.pid) - cpuBefore;
      }
      progress(`  round ${round + 1}/${settings.rounds}: ${targets.map((t) => `${t.name} ${results.get(t)!.tally.messagesPerSecond.toFixed(0)}/s`).join(', ')}`);
      onRound(results);
    }
  } finally {
    for (const generator of generators.values()) await generator.close();
  }
}

/** Runs one batch and checks that the sink received each copy the target accepted (encrypted, if it should be). */
async function sendChecked(target: Target, sink: Child, send: () => Promise<number>): Promise<void> {
  const before = await askHelper<SinkStats>(sink, 'stats');
  const count = await send();
  const after = await askHelper<SinkStats>(sink, 'stats');
  const expected = count * target.copies;
  const received = after.messages - before.messages;
  const encrypted = after.pgpMessages - before.pgpMessages;
  if (received !== expected) throw new Error(`${target.name}: ${count} messages accepted, the sink received ${received} copies, expected ${expected}`);
  if (target.encrypts && encrypted !== expected) throw new Error(`${target.name}: only ${encrypted} of ${expected} relayed copies were encrypted`);
  if (!target.encrypts && encrypted !== 0) throw new Error(`${target.name}: ${encrypted} messages arrived encrypted`);
}

/** Ctrl-C or SIGTERM: kill the children at once, then drop the database (bounded in time), then exit. */
function buildRecord(settings: Settings, database: BenchRecord['database'], samples: Samples): BenchRecord {
  const recorded = {
    sections: settings.sections,
    rounds: settings.rounds,
    message_bytes: settings.messageBytes,
    concurrency: settings.concurrency,
    batch_window_ms: settings.batch.windowMs,
    batch_max_messages: settings.batch.maxMessages,
    warmup_ms: settings.warmupMs,
    recipient_counts: settings.recipientCounts,
    recipient_sessions: settings.recipientSessions,
    big_messages: settings.bigMessages.map(({ bytes, rounds }) => ({ bytes, rounds })),
    key_store_addresses: database === 'postgres' ? settings.keyStoreSize : 0,
    lookups_per_round: settings.lookupsPerRound,
    lacre_log_level: settings.lacreLogLevel,
  };
  return newRecord(settings.mode, database, recorded, samples.figures());
}

function report(record: BenchRecord, jsonFile: string | undefined, historyFile: string | undefined): void {
  const header = `${recordTitle('Lacre bench', record)}\n  median over the rounds  [min – max]\n`;
  const table = header + formatTable(record.figures);
  if (historyFile) {
    appendToHistory(historyFile, record);
    progress(`record appended to ${historyFile}`);
  }
  writeRecord(record, table, jsonFile);
}

bench.run(main);
