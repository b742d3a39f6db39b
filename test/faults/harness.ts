/**
 * One fault scenario end to end: a private Postfix (short retry times) → `lacre serve` (a child the scenario may kill
 * and restart, as systemd would) → a counting SMTP sink standing in for the reinjection listener. The load runs
 * while the scenario's fault plays; then the queue must drain and every copy is accounted for.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { contentEntity, armoredBlock } from '../helpers/corpus.js';
import { databaseEnv, openTestDatabase, type TestBackend, type TestDatabase } from '../helpers/databases.js';
import { decrypt, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { startPostfix, type PostfixInstance } from '../helpers/postfix.js';
import { freePort } from '../helpers/ports.js';
import { MAILBOXES, makeMessage, sendLoad, sleep } from './load.js';
import { CountingSink, LARGE_MESSAGE_BYTES, Tally, type CountingSinkOptions, type Figures } from './tally.js';

export interface Keys {
  home: GpgHome;
  byRecipient: ReadonlyMap<string, GpgKey>;
}

export interface Row extends Figures {
  scenario: string;
  peakRssMiB: number;
  drainSeconds: number;
  note: string;
}

/** What a scenario's fault can reach while the load runs. */
export interface FaultContext {
  readonly lacre: Supervisor;
  readonly sink: CountingSink;
  readonly postfix: PostfixInstance;
  /** Resolves when Postfix has taken the whole load. */
  readonly loadSent: Promise<unknown>;
  note(text: string): void;
}

/** What a scenario must show beyond "nothing lost, no plaintext to a keyed recipient, no wrong copy". */
export interface Expectations {
  /**
   * 'none': duplicated must be 0 (ledger on and no crash: nothing else makes one); 'some': more than 0 (ledger off
   * while Postfix retries messages with copies already reinjected); 'unasserted': depends on where random kills fall.
   */
  duplicates: 'none' | 'some' | 'unasserted';
  /** Proof that the fault bit: at least this many deferrals by Postfix of mail to Lacre. */
  minDeferrals: number;
  /** kill -9 scenarios: the restarts of lacre serve that must have happened (one per kill requested). */
  restarts?: number;
}

export interface Scenario {
  name: string;
  expect: Expectations;
  count: number;
  perSecond: number;
  backend?: TestBackend;
  sink?: CountingSinkOptions;
  /** Extra environment for `lacre serve`. */
  env?: NodeJS.ProcessEnv;
  /** The database Lacre connects to, when not the test database itself (e.g. a proxy in front of it). */
  databaseEnv?: (database: TestDatabase) => Promise<NodeJS.ProcessEnv>;
  /** Where Lacre relays to, when something stands between it and the sink (e.g. a maxproc listener). */
  relayPort?: (sinkPort: number) => Promise<number>;
  fault: (context: FaultContext) => Promise<void>;
  /** Run once the database holds the keys; answers extra environment for `lacre serve`. */
  prepare?: (databaseEnv: NodeJS.ProcessEnv) => Promise<NodeJS.ProcessEnv>;
  /** Extra checks after the drain (copies found elsewhere than the sink go to the tally here); returns problems. */
  verify?: (postfix: PostfixInstance, tally: Tally) => Promise<string[]>;
  cleanup?: () => Promise<void>;
}

/** Figures that show the run tested what it claims to, checked against the scenario's Expectations. */
export interface Proof {
  /** Deferrals by Postfix of mail to Lacre. */
  deferrals: number;
  /** Restarts of lacre serve after a kill -9. */
  restarts: number;
  /** Messages over LARGE_MESSAGE_BYTES with a keyed recipient in the load. */
  largeKeyedMessages: number;
  /** Keyed copies of those messages decrypted with gpg and found right (sampled relay copies and box blobs). */
  largeDecrypted: number;
}

export interface Outcome {
  row: Row;
  problems: string[];
  proof: Proof;
}

const DRAIN_TIMEOUT_MS = 240_000;
/** After the queue is empty, time for a late duplicate (Postfix retries every few seconds here) to show up. */
const SETTLE_MS = 3_000;

export async function runScenario(scenario: Scenario, keys: Keys): Promise<Outcome> {
  const tally = new Tally();
  const notes: string[] = [];
  const database = await databaseWithKeys(scenario.backend ?? { name: 'embedded' }, keys);
  const sink = new CountingSink((recipients, data) => tally.arrived(recipients, data));
  let postfix: PostfixInstance | undefined;
  let lacre: Supervisor | undefined;
  try {
    await sink.start(scenario.sink);
    const filterPort = await freePort();
    postfix = await startPostfix({
      filterPort,
      mailboxes: MAILBOXES,
      mainCf: { queue_run_delay: '2s', minimal_backoff_time: '2s', maximal_backoff_time: '4s' },
    });
    const relayPort = scenario.relayPort ? await scenario.relayPort(sink.port) : sink.port;
    const dbEnv = scenario.databaseEnv ? await scenario.databaseEnv(database) : databaseEnv(database.config);
    const prepared = (await scenario.prepare?.(databaseEnv(database.config))) ?? {};
    lacre = await Supervisor.start({
      ...dbEnv,
      ...prepared,
      LACRE_SMTP_LISTEN: `127.0.0.1:${filterPort}`,
      LACRE_RELAY_PORT: String(relayPort),
      LACRE_LOG_LEVEL: 'info',
      ...scenario.env,
    });
    const started = Date.now();
    const messages = Array.from({ length: scenario.count }, (_, index) => index);
    const loadSent = sendLoad(postfix.smtpPort, (function* () {
      for (const index of messages) yield makeMessage(scenario.name.replace(/\W+/g, '').slice(0, 12) + Date.now().toString(36).slice(-4), index);
    })(), {
      perSecond: scenario.perSecond,
      parallel: 4,
      onSending: (() => {
        let sentIndex = 0;
        return (message) => tally.sent(message, sentIndex++);
      })(),
    });
    await scenario.fault({ lacre, sink, postfix, loadSent, note: (text) => notes.push(text) });
    await loadSent;
    await drain(postfix, tally);
    const drainSeconds = (Date.now() - started) / 1000;
    await sleep(SETTLE_MS);
    // verify first: the box blobs it hands to the tally may add to tally.problems.
    const verified = (await scenario.verify?.(postfix, tally)) ?? [];
    const samples = await checkSamples(tally, keys);
    const problems = [...tally.problems, ...samples.problems, ...verified];
    const figures = tally.figures();
    // Proof that the fault bit: how often Postfix had to retry a delivery to Lacre.
    const deferrals = countDeferrals(await postfix.log());
    notes.push(`${deferrals} deferrals by Postfix`);
    if (figures.lost > 0) problems.push(`lost, e.g.: ${tally.missing().join(', ')}\n--- queue ---\n${JSON.stringify(await postfix.queue())}`);
    const proof: Proof = {
      deferrals,
      restarts: lacre.restarts,
      largeKeyedMessages: tally.largeKeyedMessages(),
      largeDecrypted: samples.largeDecrypted + tally.largeBoxCopiesDecrypted,
    };
    return { row: { scenario: scenario.name, ...figures, peakRssMiB: lacre.peakRssMiB, drainSeconds, note: notes.join('; ') }, problems, proof };
  } finally {
    await lacre?.stop();
    await postfix?.stop();
    await sink.stop();
    await scenario.cleanup?.();
    await database.cleanup();
  }
}

/** Waits until Postfix's queue stays empty and every pair arrived, or the bound passes. */
async function drain(postfix: PostfixInstance, tally: Tally): Promise<void> {
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  let emptyInARow = 0;
  while (Date.now() < deadline) {
    const queued = (await postfix.queue()).length;
    emptyInARow = queued === 0 ? emptyInARow + 1 : 0;
    if (emptyInARow >= 2 && tally.figures().lost === 0) return;
    if (emptyInARow >= 10) return;
    await sleep(500);
  }
}

export function countDeferrals(maillog: string): number {
  return maillog.split('\n').filter((line) => /postfix\/lacre\/smtp\[\d+\]: .*status=deferred/.test(line)).length;
}

/** What a run showed against what its scenario expects; empty when every expectation holds. */
export function unmetExpectations(expect: Expectations, row: Row, proof: Proof): string[] {
  const unmet: string[] = [];
  if (expect.duplicates === 'none' && row.duplicated !== 0) unmet.push(`${row.duplicated} duplicated, expected none`);
  if (expect.duplicates === 'some' && row.duplicated === 0) unmet.push('0 duplicated, expected some (the duplicates "before")');
  if (proof.deferrals < expect.minDeferrals) unmet.push(`${proof.deferrals} deferrals by Postfix, expected at least ${expect.minDeferrals}: the fault did not bite`);
  if (expect.restarts !== undefined && proof.restarts !== expect.restarts) unmet.push(`${proof.restarts} restarts of lacre serve, expected ${expect.restarts}`);
  if (proof.largeKeyedMessages > 0 && proof.largeDecrypted === 0) {
    unmet.push(`none of the keyed copies of the ${proof.largeKeyedMessages} message(s) over ${LARGE_MESSAGE_BYTES} bytes was decrypted`);
  }
  return unmet;
}

/** Decrypts the sampled keyed copies with gpg: each names only its recipient's key and gives the exact content entity. */
async function checkSamples(tally: Tally, keys: Keys): Promise<{ problems: string[]; largeDecrypted: number }> {
  const problems: string[] = [];
  let largeDecrypted = 0;
  if (tally.samples.length === 0) problems.push('no keyed copy was sampled for decryption');
  for (const sample of tally.samples) {
    const key = keys.byRecipient.get(sample.recipient)!;
    const block = armoredBlock(sample.copy);
    const keyIds = await listPacketsKeyIds(keys.home, block);
    const toRecipientAlone = keyIds.join() === key.encryptionKeyId;
    if (!toRecipientAlone) problems.push(`${sample.recipient}: copy encrypted to ${keyIds.join()}, not ${key.encryptionKeyId}`);
    const plain = await decrypt(keys.home, block);
    const exact = plain.equals(contentEntity(sample.original));
    if (!exact) problems.push(`${sample.recipient}: a sampled copy does not decrypt to the content entity`);
    if (toRecipientAlone && exact && sample.original.length > LARGE_MESSAGE_BYTES) largeDecrypted += 1;
  }
  return { problems, largeDecrypted };
}

/** A fresh database on `backend` holding the keyed recipients' public keys, imported by the CLI as an admin would. */
async function databaseWithKeys(backend: TestBackend, keys: Keys): Promise<TestDatabase> {
  const database = await openTestDatabase(backend);
  await database.db.close();
  const dir = await mkdtemp(join(tmpdir(), 'lacre-faults-keys-'));
  const keyFile = join(dir, 'keys.asc');
  await writeFile(keyFile, [...keys.byRecipient.values()].map((key) => key.publicArmored).join(''));
  const imported = await runLacre(['keys', 'import', keyFile], databaseEnv(database.config));
  await rm(dir, { recursive: true, force: true });
  if (imported.code !== 0) throw new Error(`lacre keys import: ${imported.stderr}`);
  return database;
}

/** `lacre serve` as systemd runs it: restarted after a crash; its RSS sampled across restarts. */
export class Supervisor {
  peakRssMiB = 0;
  restarts = 0;
  private sampler: NodeJS.Timeout | undefined;

  private constructor(
    private server: LacreServer,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.sampler = setInterval(() => void this.sampleRss(), 250);
  }

  static async start(env: NodeJS.ProcessEnv): Promise<Supervisor> {
    return new Supervisor(await LacreServer.start(env), env);
  }

  /** kill -9, then a restart after `downMs` (systemd's RestartSec). */
  async killAndRestart(downMs: number): Promise<void> {
    this.server.kill();
    await sleep(downMs);
    this.server = await LacreServer.start(this.env);
    this.restarts += 1;
  }

  async stop(): Promise<void> {
    clearInterval(this.sampler);
    this.sampler = undefined;
    await this.server.stop();
  }

  private async sampleRss(): Promise<void> {
    const pid = this.server.pid;
    if (pid === undefined) return;
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kib = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0);
    this.peakRssMiB = Math.max(this.peakRssMiB, kib / 1024);
  }
}

export function formatTable(rows: readonly Row[]): string {
  const header = '| scenario | sent | delivered | duplicated | lost | plaintext to keyed | peak RSS | time to drain |';
  const lines = rows.map((row) =>
    `| ${row.scenario}${row.note ? ` (${row.note})` : ''} | ${row.messages} msgs, ${row.sent} copies | ${row.delivered} | ${row.duplicated} | ${row.lost} | ${row.plaintextToKeyed} | ${row.peakRssMiB.toFixed(0)} MiB | ${row.drainSeconds.toFixed(1)} s |`,
  );
  return [header, '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |', ...lines].join('\n');
}

/** test-output/faults.md at the repository root (dist/test/faults/ is three levels down). */
export async function writeTable(markdown: string): Promise<string> {
  const dir = fileURLToPath(new URL('../../../test-output/', import.meta.url));
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'faults.md');
  await writeFile(path, `${markdown}\n`);
  return path;
}
