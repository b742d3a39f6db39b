import { writeFileSync } from 'node:fs';
/** The bench's JSON record: what was measured, on which commit and machine; the history file of records. */
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Figures } from './stats.js';

/** Bumped when the meaning of existing fields changes; the report reads every version it knows. */
export const RECORD_VERSION = 2;

export interface BenchRecord {
  version: number;
  /** Short hash of HEAD. */
  commit: string;
  /** The work tree differed from HEAD (bench/history.jsonl itself aside): the figures are not exactly `commit`'s. */
  dirty: boolean;
  /** HEAD's subject line. */
  subject: string;
  date: string;
  machine: { cpus: number; model: string; memory_gb: number; kernel: string; node: string };
  mode: 'quick' | 'full';
  database: 'postgres' | 'embedded';
  settings: Record<string, unknown>;
  figures: Figures;
}

export const REPOSITORY_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEFAULT_HISTORY = fileURLToPath(new URL('../../bench/history.jsonl', import.meta.url));
const HISTORY_PATH_IN_REPO = 'bench/history.jsonl';

export function describeCommit(): Pick<BenchRecord, 'commit' | 'dirty' | 'subject'> {
  const commit = git(['rev-parse', '--short', 'HEAD']) ?? 'unknown';
  const subject = git(['log', '-1', '--format=%s']) ?? '';
  const status = git(['status', '--porcelain']);
  const changed = (status ?? '').split('\n').filter((line) => line.trim() !== '' && !line.endsWith(` ${HISTORY_PATH_IN_REPO}`));
  return { commit, dirty: status === undefined || changed.length > 0, subject };
}

export function describeMachine(): BenchRecord['machine'] {
  return {
    cpus: cpus().length,
    model: cpus()[0]?.model.trim() ?? 'unknown',
    memory_gb: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
  };
}

function git(args: string[]): string | undefined {
  try {
    return execFileSync('git', ['-C', REPOSITORY_ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

/** A record of this commit and machine, dated now. */
export function newRecord(mode: BenchRecord['mode'], database: BenchRecord['database'], settings: BenchRecord['settings'], figures: Figures): BenchRecord {
  return { version: RECORD_VERSION, ...describeCommit(), date: new Date().toISOString(), machine: describeMachine(), mode, database, settings, figures };
}

/** The first line of a printed table: which bench, mode, commit, date, machine and database. */
export function recordTitle(bench: string, record: BenchRecord): string {
  const { machine } = record;
  return (
    `${bench} (${record.mode}) ${record.commit}${record.dirty ? ' (dirty)' : ''} ${record.date} — ${machine.cpus}× ${machine.model}, ` +
    `node ${machine.node}, database ${record.database}`
  );
}

export function appendToHistory(file: string, record: BenchRecord): void {
  appendFileSync(file, `${JSON.stringify(record)}\n`);
}

/** Every record in a history file, oldest first; a line that is not a record is an error naming the line. */
export function readHistory(file: string): BenchRecord[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((line, index) => {
      if (line.trim() === '') return [];
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch (error) {
        throw new Error(`${file}:${index + 1}: not JSON: ${(error as Error).message}`);
      }
      if (!isRecord(parsed)) throw new Error(`${file}:${index + 1}: not a bench record (needs commit, date, mode, figures)`);
      return [normalise(parsed)];
    });
}

function isRecord(value: unknown): value is BenchRecord {
  const record = value as Partial<BenchRecord> | null;
  return typeof record === 'object' && record !== null && typeof record.commit === 'string' && typeof record.date === 'string' && typeof record.mode === 'string' && typeof record.figures === 'object' && record.figures !== null;
}

/** Version-1 records (the first bench) had { value, unit } figures and no dirty flag. */
function normalise(record: BenchRecord): BenchRecord {
  const figures: Figures = {};
  for (const [name, figure] of Object.entries(record.figures)) {
    figures[name] = { value: figure.value, min: figure.min ?? figure.value, max: figure.max ?? figure.value, n: figure.n ?? 1, unit: figure.unit };
  }
  return { ...record, version: record.version ?? 1, dirty: record.dirty ?? false, subject: record.subject ?? '', figures };
}

/** The figures as an aligned text table: name, median, [min – max] over n rounds, unit. */
export function formatTable(figures: Figures): string {
  const rows = Object.entries(figures).map(([name, { value, min, max, n, unit }]) => ({
    name,
    value: String(value),
    range: n > 1 ? `[${min} – ${max}]` : '',
    unit,
  }));
  const width = (pick: (row: (typeof rows)[number]) => string) => Math.max(0, ...rows.map((row) => pick(row).length));
  const [nameWidth, valueWidth, rangeWidth] = [width((row) => row.name), width((row) => row.value), width((row) => row.range)];
  return rows.map((row) => `  ${row.name.padEnd(nameWidth)}  ${row.value.padStart(valueWidth)}  ${row.range.padEnd(rangeWidth)}  ${row.unit}`).join('\n') + '\n';
}

/** The table on stdout and the record as JSON: to FILE, to stdout after the table, or (`-`) alone on stdout. */
export function writeRecord(record: unknown, table: string, jsonFile: string | undefined): void {
  if (jsonFile === '-') {
    process.stderr.write(table);
    process.stdout.write(`${JSON.stringify(record, null, 2)}\n`);
    return;
  }
  process.stdout.write(table);
  if (jsonFile) writeFileSync(jsonFile, `${JSON.stringify(record, null, 2)}\n`);
  else process.stdout.write(`${JSON.stringify(record)}\n`);
}
