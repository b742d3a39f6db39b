/**
 * The words of bench/report.html, as pure functions of the records: what the newest record measured, each figure's
 * name in words, which records are machine noise, and where the newest record stands against the checked-out commit.
 */
import type { BenchRecord } from './record.js';
import type { Figures } from './stats.js';

/** The no-crypto pass-through at the headline's 10 sessions: the ceiling whose own moves reveal the machine. */
export const CEILING_FIGURE = 'passthrough_c10_msgs_per_s';
/** A ceiling that moved more than this against the record before says more about the machine than about Lacre. */
export const NOISE_THRESHOLD_PCT = 30;

/** The issue's targets, per figure: drawn on the charts, checked in the table and counted in the headline. */
export const TARGETS: Record<string, { op: '>=' | '<='; value: number }> = {
  lacre_cv25519_c10_ratio_to_ceiling: { op: '>=', value: 0.5 },
  lacre_rsa3072_c10_ratio_to_ceiling: { op: '>=', value: 0.7 },
  lacre_cv25519_c10_p99_added_ms: { op: '<=', value: 20 },
  lacre_rsa3072_c10_p99_added_ms: { op: '<=', value: 20 },
  big_200mb_lacre_peak_rss_mb: { op: '<=', value: 150 },
  big_200mb_lacre_mb_per_s: { op: '>=', value: 120 },
};

/** One sentence of the headline and the figures it reads, so the page can name them next to it. */
export interface Sentence {
  text: string;
  figures: string[];
  /** Shown as a warning: the record's absolute figures are machine noise. */
  warn?: boolean;
}

export interface Notice {
  level: 'ok' | 'info' | 'warn';
  text: string;
}

/** How a record's ceiling moved against the last earlier record that measured it. */
export interface CeilingMove {
  previousCommit: string;
  changePct: number;
  noise: boolean;
}

/** Where the newest record's commit stands against the checked-out one (see bench/checkout.ts). */
export type Checkout =
  | { kind: 'no-git'; reason: string }
  | { kind: 'unknown-commit'; head: string }
  | { kind: 'known'; head: string; same: boolean; ancestor: boolean; behind: number; codeChanges: number };

const LOADS: Record<string, string> = {
  sink_alone: 'sink alone',
  passthrough: 'pass-through (the no-crypto ceiling)',
  lacre_cv25519: 'Lacre with a cv25519 key',
  lacre_rsa3072: 'Lacre with an RSA-3072 key',
};

const LOAD_METRICS: Record<string, string> = {
  msgs_per_s: 'messages/s',
  p50_ms: 'median latency (p50)',
  p99_ms: 'p99 latency (the slowest 1 %)',
  cpu_ms_per_msg: 'CPU ms per message',
  ratio_to_ceiling: 'ratio to pass-through',
  p99_added_ms: 'p99 latency added over the pass-through',
};

const RECIPIENT_METRICS: Record<string, string> = {
  msgs_per_s: 'messages/s',
  ms_per_msg: 'wall ms per message',
  ms_per_recipient: 'wall ms per recipient',
  cpu_ms_per_msg: 'CPU ms per message',
  p50_ms: 'median latency (p50)',
};

const BIG_METRICS: Record<string, string> = {
  mb_per_s: 'MB/s, {size}, Lacre',
  ratio_to_ceiling: 'ratio to pass-through, {size}',
  peak_rss_mb: 'peak memory (RSS) of lacre serve, {size}',
  rss_growth_mb: 'memory (RSS) growth of lacre serve during a {size}',
  output_ratio: 'output ÷ input bytes (armor), {size}',
};

const SINGLE_FIGURES: Record<string, string> = {
  lacre_load_peak_rss_mb: 'peak memory (RSS) of lacre serve after the 4 KiB loads',
  recipient_extra_ms: 'wall ms one more keyed recipient adds to a message',
  recipient_extra_cpu_ms: 'CPU ms one more keyed recipient adds to a message',
  key_lookup_cold_ms: 'key lookup, not cached',
  key_lookup_cold_c10_per_s: 'key lookups/s, not cached, 10 at once',
  key_lookup_unknown_ms: 'lookup of an address without a key, not cached',
  key_lookup_warm_us: 'key lookup answered from the cache',
  big_lacre_idle_rss_mb: 'memory (RSS) of a fresh, idle lacre serve',
};

const sessions = (c: string) => `${c} session${c === '1' ? '' : 's'}`;

/** A figure's identifier in words ("ratio to pass-through, Lacre with a cv25519 key, 10 sessions"); null if unknown. */
export function describeFigure(figure: string): string | null {
  const single = SINGLE_FIGURES[figure];
  if (single) return single;
  const load = /^(sink_alone|passthrough|lacre_cv25519|lacre_rsa3072)_c(\d+)_(\w+)$/.exec(figure);
  if (load) {
    const [, who, c, metric] = load as unknown as [string, string, string, string];
    const words = LOAD_METRICS[metric];
    const lacreOnly = metric === 'ratio_to_ceiling' || metric === 'p99_added_ms';
    return words && (!lacreOnly || who.startsWith('lacre')) ? `${words}, ${LOADS[who]}, ${sessions(c)}` : null;
  }
  const headroom = /^sink_c(\d+)_headroom_over_ceiling$/.exec(figure);
  if (headroom) return `sink's headroom over the pass-through, ${sessions(headroom[1]!)}`;
  const recipients = /^recipients_(\d+)_(\w+)$/.exec(figure);
  if (recipients) {
    const words = RECIPIENT_METRICS[recipients[2]!];
    const n = recipients[1]!;
    return words ? `${words}, ${n} keyed recipient${n === '1' ? '' : 's'} per message` : null;
  }
  const big = /^big_(\d+)mb_(lacre|passthrough)_(\w+)$/.exec(figure);
  if (big) {
    const [, size, who, metric] = big as unknown as [string, string, string, string];
    if (who === 'passthrough') return metric === 'mb_per_s' ? `MB/s, ${size} MB message, pass-through` : null;
    return BIG_METRICS[metric]?.replace('{size}', `${size} MB message`) ?? null;
  }
  return null;
}

/** "abc1234", or "abc1234*" when the record was made with uncommitted changes. */
export function recordLabel(record: Pick<BenchRecord, 'commit' | 'dirty'>): string {
  return `${record.commit}${record.dirty ? '*' : ''}`;
}

/** Per record, how its ceiling moved against the last earlier record that measured one; null for none. */
export function ceilingMoves(records: BenchRecord[]): Array<CeilingMove | null> {
  let previous: BenchRecord | undefined;
  return records.map((record) => {
    const now = record.figures[CEILING_FIGURE]?.value;
    if (now === undefined) return null;
    const before = previous?.figures[CEILING_FIGURE]?.value;
    const move = previous && before !== undefined && before > 0 ? toMove(recordLabel(previous), ((now - before) / before) * 100) : null;
    previous = record;
    return move;
  });
}

function toMove(previousCommit: string, changePct: number): CeilingMove {
  return { previousCommit, changePct, noise: Math.abs(changePct) > NOISE_THRESHOLD_PCT };
}

/** "+189 %", "−72 %". */
export function signedPercent(changePct: number): string {
  const rounded = Math.round(changePct);
  return `${rounded >= 0 ? '+' : '−'}${Math.abs(rounded)} %`;
}

/** Why a record is machine noise, for its label and tooltip; null when it is not. */
export function noiseNote(move: CeilingMove | null): string | null {
  return move?.noise ? `machine noise: ceiling ${signedPercent(move.changePct)} against ${move.previousCommit}` : null;
}

/** How many noisy records the summary names; older ones are counted. */
const NOISE_NAMED = 8;

/** The records marked as machine noise, newest last, in one sentence; null when none is. */
export function noiseSummary(records: BenchRecord[], moves: Array<CeilingMove | null>): string | null {
  const noisy = records.flatMap((record, i) => {
    const move = moves[i];
    return move?.noise ? [`${recordLabel(record)} (${signedPercent(move.changePct)} against ${move.previousCommit})`] : [];
  });
  if (noisy.length === 0) return null;
  const earlier = noisy.length - NOISE_NAMED;
  const named = earlier > 0 ? `${earlier} earlier record${earlier === 1 ? '' : 's'}, ${noisy.slice(earlier).join(', ')}` : noisy.join(', ');
  return `Marked as machine noise (the no-crypto ceiling, ${CEILING_FIGURE}, moved more than ${NOISE_THRESHOLD_PCT} % against the record before): ${named}.`;
}

/** "about" figures: three significant digits from 100 up, grouped by thousands ("1 070"); two below ("6.9", "0.27"). */
export function approximate(value: number): string {
  if (Math.abs(value) >= 100) {
    const magnitude = 10 ** (Math.floor(Math.log10(Math.abs(value))) - 2);
    return groupThousands(Math.round(value / magnitude) * magnitude);
  }
  return value.toPrecision(2);
}

function groupThousands(value: number): string {
  return Math.round(value).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
}

const percentOf = (ratio: number) => `${Math.round(ratio * 100)} %`;

function utcDate(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

function sentence(figures: Figures, ids: string[], build: (value: (id: string) => number) => string): Sentence {
  return { text: build((id) => figures[id]!.value), figures: ids };
}

function has(figures: Figures, ...ids: string[]): boolean {
  return ids.every((id) => figures[id] !== undefined);
}

function introduction(record: BenchRecord): Sentence {
  const { machine } = record;
  const database = record.database === 'postgres' ? 'PostgreSQL' : 'the embedded database (PGlite)';
  const subject = record.subject ? ` ("${record.subject}")` : '';
  const changes = record.dirty ? ' with uncommitted changes' : '';
  return {
    text:
      `The newest record was measured on ${utcDate(record.date)}, on commit ${recordLabel(record)}${subject}${changes}: ` +
      `a ${record.mode} run on ${machine.cpus} CPU cores (${machine.model}, ${machine.memory_gb} GB), with the keys in ${database}.`,
    figures: [],
  };
}

/** The session count the headline speaks of: 10 when measured, else the first measured. */
function headlineSessions(figures: Figures): string | undefined {
  if (figures.lacre_cv25519_c10_msgs_per_s) return '10';
  return Object.keys(figures).map((id) => /^lacre_cv25519_c(\d+)_msgs_per_s$/.exec(id)?.[1]).find((c) => c !== undefined);
}

function messageSize(record: BenchRecord): string {
  const bytes = record.settings.message_bytes;
  return typeof bytes === 'number' && bytes % 1024 === 0 ? ` ${bytes / 1024} KiB` : '';
}

function throughput(record: BenchRecord, c: string): Sentence[] {
  const f = record.figures;
  const [cv, cvRatio, ceiling] = [`lacre_cv25519_c${c}_msgs_per_s`, `lacre_cv25519_c${c}_ratio_to_ceiling`, `passthrough_c${c}_msgs_per_s`];
  const [rsa, rsaRatio] = [`lacre_rsa3072_c${c}_msgs_per_s`, `lacre_rsa3072_c${c}_ratio_to_ceiling`];
  const said: Sentence[] = [];
  if (has(f, cv)) {
    const ids = [cv, ...[cvRatio, ceiling].filter((id) => has(f, id))];
    said.push(sentence(f, ids, (v) => {
      const share = has(f, cvRatio) ? `, ${percentOf(v(cvRatio))} of the no-crypto ceiling` : '';
      const passthrough = has(f, ceiling) ? ` (the pass-through, which relays the same messages without encryption, managed about ${approximate(v(ceiling))} messages/s in the same rounds)` : '';
      return `At ${sessions(c).replace('session', 'SMTP session')} sending${messageSize(record)} messages at once, Lacre encrypted about ${approximate(v(cv))} messages/s for a recipient with a cv25519 key${share}${passthrough}.`;
    }));
  }
  if (has(f, rsa)) {
    const ids = [rsa, ...[rsaRatio].filter((id) => has(f, id))];
    said.push(sentence(f, ids, (v) => `With an RSA-3072 key: about ${approximate(v(rsa))} messages/s${has(f, rsaRatio) ? `, ${percentOf(v(rsaRatio))} of the ceiling` : ''}.`));
  }
  return said;
}

function latencyAndCpu(record: BenchRecord, c: string): Sentence[] {
  const f = record.figures;
  const said: Sentence[] = [];
  const [p99, p99Ceiling] = [`lacre_cv25519_c${c}_p99_ms`, `passthrough_c${c}_p99_ms`];
  if (has(f, p99, p99Ceiling)) {
    said.push(sentence(f, [p99, p99Ceiling], (v) => `The slowest 1 % of those messages (p99 latency) took about ${approximate(v(p99))} ms with a cv25519 key, against ${approximate(v(p99Ceiling))} ms without encryption.`));
  }
  const [cpu, cpuCeiling] = [`lacre_cv25519_c${c}_cpu_ms_per_msg`, `passthrough_c${c}_cpu_ms_per_msg`];
  if (has(f, cpu, cpuCeiling)) {
    said.push(sentence(f, [cpu, cpuCeiling], (v) => `Lacre spent about ${approximate(v(cpu))} ms of CPU per message, the pass-through ${approximate(v(cpuCeiling))} ms: the figure least moved by whatever else the machine was doing.`));
  }
  return said;
}

function recipientCost(record: BenchRecord): Sentence[] {
  const f = record.figures;
  if (!has(f, 'recipient_extra_ms', 'recipient_extra_cpu_ms')) return [];
  return [sentence(f, ['recipient_extra_ms', 'recipient_extra_cpu_ms'], (v) => `Each extra keyed recipient of a message cost about ${approximate(v('recipient_extra_ms'))} ms of wall time and ${approximate(v('recipient_extra_cpu_ms'))} ms of CPU.`)];
}

function bigMessage(record: BenchRecord): Sentence[] {
  const f = record.figures;
  const sizes = Object.keys(f).flatMap((id) => /^big_(\d+)mb_lacre_mb_per_s$/.exec(id)?.[1] ?? []).map(Number);
  if (sizes.length === 0) return [];
  const size = Math.max(...sizes);
  const id = (metric: string) => `big_${size}mb_${metric}`;
  const [rate, ratio, ceiling, peak, growth] = [id('lacre_mb_per_s'), id('lacre_ratio_to_ceiling'), id('passthrough_mb_per_s'), id('lacre_peak_rss_mb'), id('lacre_rss_growth_mb')];
  const said = [sentence(f, [rate, ...[ratio, ceiling].filter((x) => has(f, x))], (v) => {
    const share = has(f, ratio, ceiling) ? `, ${percentOf(v(ratio))} of the pass-through's ${approximate(v(ceiling))} MB/s` : '';
    return `A ${size} MB message went through Lacre at about ${approximate(v(rate))} MB/s${share}.`;
  })];
  if (has(f, peak)) {
    const ids = [peak, ...[growth].filter((x) => has(f, x))];
    const embedded = record.database === 'embedded' ? ' (the embedded database runs inside that process: only the growth speaks of Lacre)' : '';
    said.push(sentence(f, ids, (v) => `While encrypting it, lacre serve's memory peaked at ${approximate(v(peak))} MB (RSS)${has(f, growth) ? `, ${approximate(v(growth))} MB more than just before` : ''}${embedded}.`));
  }
  return said;
}

function keyLookup(record: BenchRecord): Sentence[] {
  const f = record.figures;
  if (!has(f, 'key_lookup_cold_ms', 'key_lookup_warm_us')) return [];
  const addresses = record.settings.key_store_addresses;
  const among = typeof addresses === 'number' && addresses > 0 ? ` among ${groupThousands(addresses)} addresses` : '';
  return [sentence(f, ['key_lookup_cold_ms', 'key_lookup_warm_us'], (v) => `Finding a recipient's key${among} took about ${approximate(v('key_lookup_cold_ms'))} ms when not cached and ${approximate(v('key_lookup_warm_us'))} µs from the cache.`)];
}

/** Whether a figure meets its target; undefined when it has none. */
export function meetsTarget(figure: string, value: number): boolean | undefined {
  const target = TARGETS[figure];
  if (!target) return undefined;
  return target.op === '>=' ? value >= target.value : value <= target.value;
}

export function targetText(figure: string): string | null {
  const target = TARGETS[figure];
  return target ? `${target.op === '>=' ? '≥' : '≤'} ${target.value}` : null;
}

function targets(record: BenchRecord): Sentence[] {
  const measured = Object.keys(TARGETS).filter((id) => record.figures[id] !== undefined);
  if (measured.length === 0) return [];
  const missed = measured.filter((id) => !meetsTarget(id, record.figures[id]!.value));
  const what = missed.map((id) => `${describeFigure(id) ?? id} (${approximate(record.figures[id]!.value)}, target ${targetText(id)})`);
  const met = measured.length - missed.length;
  const text = missed.length === 0 ? `It meets all ${measured.length} targets of issue 4 it measured.` : `It meets ${met} of the ${measured.length} targets of issue 4; missed: ${what.join('; ')}.`;
  return [{ text, figures: measured }];
}

function noiseWarning(move: CeilingMove | null): Sentence[] {
  if (!move?.noise) return [];
  return [{
    text:
      `Careful: the no-crypto ceiling itself (the pass-through at 10 sessions) moved ${signedPercent(move.changePct)} against the previous record (${move.previousCommit}), ` +
      `more than ${NOISE_THRESHOLD_PCT} %: the machine was busier or quieter, so this record's messages/s and MB/s are machine noise — compare its ratios to the ceiling and CPU per message instead.`,
    figures: [CEILING_FIGURE],
    warn: true,
  }];
}

/** What the newest record measured, in plain sentences an admin can read; the figures each one draws on. */
export function headline(record: BenchRecord, move: CeilingMove | null): Sentence[] {
  const c = headlineSessions(record.figures);
  return [
    introduction(record),
    ...noiseWarning(move),
    ...(c ? [...throughput(record, c), ...latencyAndCpu(record, c)] : []),
    ...bigMessage(record),
    ...keyLookup(record),
    ...recipientCost(record),
    ...targets(record),
  ];
}

/** Whether the newest record describes the checked-out code: which commit it is from and how far behind. */
export function checkoutNotice(record: BenchRecord, checkout: Checkout): Notice {
  const label = recordLabel(record);
  switch (checkout.kind) {
    case 'no-git':
      return { level: 'info', text: `Could not compare the newest record (${label}) with the checked-out commit: ${checkout.reason}.` };
    case 'unknown-commit':
      return { level: 'warn', text: `The newest record is not the checked-out commit: its commit ${label} is not in this repository (checked out: ${checkout.head}).` };
    case 'known':
      return knownCheckoutNotice(record, checkout);
  }
}

function knownCheckoutNotice(record: BenchRecord, checkout: Extract<Checkout, { kind: 'known' }>): Notice {
  const label = recordLabel(record);
  if (checkout.same) {
    return record.dirty
      ? { level: 'warn', text: `The newest record is from the checked-out commit, ${checkout.head}, but was made with uncommitted changes (${label}).` }
      : { level: 'ok', text: `The newest record is from the checked-out commit, ${checkout.head}.` };
  }
  const commits = `${checkout.behind} commit${checkout.behind === 1 ? '' : 's'}`;
  const where = checkout.ancestor
    ? `${commits} behind the checked-out ${checkout.head}`
    : `which is not an ancestor of the checked-out ${checkout.head} (${commits} of it are not in ${label})`;
  const code =
    checkout.codeChanges === 0
      ? 'none of them changes src/ (the code measured), so its figures should still hold'
      : `${checkout.codeChanges} of them change${checkout.codeChanges === 1 ? 's' : ''} src/ (the code measured), so its figures may not describe the code as it is now`;
  return { level: checkout.codeChanges === 0 ? 'info' : 'warn', text: `The newest record is not the checked-out commit: it is from ${label}, ${where}; ${code}.` };
}
