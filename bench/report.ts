/**
 * `npm run bench:report`: renders bench/history.jsonl as bench/report.html — one chart per figure (related
 * figures share one) over the records, oldest first, with the min–max over the rounds as a band. Chart.js and the
 * page script are inlined, so the file opens offline. See bench/README.md.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readCheckout } from './checkout.js';
import { DEFAULT_HISTORY, readHistory, REPOSITORY_ROOT, type BenchRecord } from './record.js';
import type { ReportChart, ReportData, ReportRecord, ReportRow, ReportSeries, ReportTarget } from './report-data.js';
import { ceilingMoves, checkoutNotice, describeFigure, headline, meetsTarget, noiseNote, noiseSummary, recordLabel, targetText, TARGETS, type CeilingMove, type Checkout, type Notice } from './report-text.js';

const CONCURRENCY = [1, 10, 50];
const MB_SIZES = [10, 200];

const COLORS = {
  passthrough: '#4c78a8',
  cv25519: '#f58518',
  rsa3072: '#54a24b',
  sink: '#9d9d9d',
  extra: ['#b279a2', '#e45756', '#72b7b2', '#eeca3b', '#ff9da6', '#9d755d'],
};

interface SeriesDef {
  figure: string;
  label: string;
  color: string;
  hidden?: boolean;
}

interface ChartDef {
  section: string;
  title: string;
  unit: string;
  note: string;
  series: SeriesDef[];
  targets?: ReportTarget[];
}

/** One dashed line per target value; figures sharing a value share the line. */
function targetLines(figures: string[]): ReportTarget[] {
  const lines = new Map<string, { op: string; value: number; names: string[] }>();
  for (const figure of figures) {
    const target = TARGETS[figure];
    if (!target) continue;
    const key = `${target.op}${target.value}`;
    const line = lines.get(key) ?? { op: target.op === '>=' ? '≥' : '≤', value: target.value, names: [] };
    line.names.push(shortName(figure));
    lines.set(key, line);
  }
  return [...lines.values()].map(({ op, value, names }) => ({ label: `target ${names.join(', ')} ${op} ${value}`, value }));
}

function shortName(figure: string): string {
  return figure.includes('cv25519') ? 'cv25519' : figure.includes('rsa3072') ? 'RSA-3072' : figure.includes('200mb') ? '200 MB' : figure;
}

/** Three loads through the same sessions: the ceiling and Lacre with either key (and the sink, hidden). */
function loadSeries(c: number, metric: string, withSink: boolean): SeriesDef[] {
  return [
    ...(withSink ? [{ figure: `sink_alone_c${c}_${metric}`, label: 'sink alone', color: COLORS.sink, hidden: true }] : []),
    { figure: `passthrough_c${c}_${metric}`, label: 'pass-through (ceiling)', color: COLORS.passthrough },
    { figure: `lacre_cv25519_c${c}_${metric}`, label: 'Lacre, cv25519 key', color: COLORS.cv25519 },
    { figure: `lacre_rsa3072_c${c}_${metric}`, label: 'Lacre, RSA-3072 key', color: COLORS.rsa3072 },
  ];
}

function lacreSeries(c: number, metric: string): SeriesDef[] {
  return [
    { figure: `lacre_cv25519_c${c}_${metric}`, label: 'cv25519', color: COLORS.cv25519 },
    { figure: `lacre_rsa3072_c${c}_${metric}`, label: 'RSA-3072', color: COLORS.rsa3072 },
  ];
}

function chartCatalogue(): ChartDef[] {
  const charts: ChartDef[] = [];
  const sessions = (c: number) => `${c} session${c === 1 ? '' : 's'}`;
  for (const c of CONCURRENCY) {
    charts.push({
      section: 'Ratio to the ceiling',
      title: `Lacre ÷ pass-through, messages/s, ${sessions(c)}`,
      unit: 'ratio',
      note: 'Taken within each round, so it survives machine drift: compare this across commits first.',
      series: lacreSeries(c, 'ratio_to_ceiling'),
      targets: targetLines(lacreSeries(c, 'ratio_to_ceiling').map((s) => s.figure)),
    });
  }
  for (const c of CONCURRENCY) {
    charts.push({ section: 'Throughput, 4 KiB messages', title: `Messages/s, ${sessions(c)}`, unit: 'msg/s', note: 'Click "sink alone" to show the sink on its own.', series: loadSeries(c, 'msgs_per_s', true) });
  }
  for (const c of CONCURRENCY) {
    charts.push({ section: 'Latency', title: `p99 latency, ${sessions(c)}`, unit: 'ms', note: 'MAIL FROM sent → 250 after DATA; p99 within each round.', series: loadSeries(c, 'p99_ms', true) });
  }
  for (const c of CONCURRENCY) {
    charts.push({
      section: 'Latency',
      title: `p99 added over the pass-through, ${sessions(c)}`,
      unit: 'ms',
      note: "Lacre's p99 minus the pass-through's, same round.",
      series: lacreSeries(c, 'p99_added_ms'),
      targets: targetLines(lacreSeries(c, 'p99_added_ms').map((s) => s.figure)),
    });
  }
  for (const c of CONCURRENCY) {
    charts.push({ section: 'Latency', title: `p50 latency, ${sessions(c)}`, unit: 'ms', note: '', series: loadSeries(c, 'p50_ms', true) });
  }
  for (const c of CONCURRENCY) {
    charts.push({ section: 'CPU', title: `CPU ms per message, ${sessions(c)}`, unit: 'ms', note: 'CPU time of the server under test only: the least noisy throughput figure.', series: loadSeries(c, 'cpu_ms_per_msg', true) });
  }
  charts.push({
    section: 'CPU',
    title: 'Sink headroom over the ceiling',
    unit: 'ratio',
    note: 'Sink alone ÷ pass-through. Under 1.5 the sink, not the server under test, may set the pace.',
    series: CONCURRENCY.map((c, i) => ({ figure: `sink_c${c}_headroom_over_ceiling`, label: sessions(c), color: COLORS.extra[i]! })),
    targets: [{ label: 'minimum 1.5', value: 1.5 }],
  });
  const recipients = [1, 5, 20];
  const perRecipientCount = (metric: string): SeriesDef[] => recipients.map((n, i) => ({ figure: `recipients_${n}_${metric}`, label: `${n} recipient${n === 1 ? '' : 's'}`, color: COLORS.extra[i]! }));
  charts.push(
    { section: 'Cost per recipient', title: 'Cost of one extra keyed recipient', unit: 'ms', note: '(20 recipients − 1 recipient) ÷ 19, per message: wall time at 10 sessions and CPU time of Lacre.', series: [
      { figure: 'recipient_extra_ms', label: 'wall ms', color: COLORS.extra[0]! },
      { figure: 'recipient_extra_cpu_ms', label: 'CPU ms', color: COLORS.extra[1]! },
    ] },
    { section: 'Cost per recipient', title: 'Wall ms per message (10 sessions)', unit: 'ms', note: '1000 ÷ messages/s.', series: perRecipientCount('ms_per_msg') },
    { section: 'Cost per recipient', title: 'Wall ms per recipient', unit: 'ms', note: '', series: perRecipientCount('ms_per_recipient') },
    { section: 'Cost per recipient', title: 'CPU ms per message', unit: 'ms', note: '', series: perRecipientCount('cpu_ms_per_msg') },
    { section: 'Cost per recipient', title: 'Messages/s', unit: 'msg/s', note: '', series: perRecipientCount('msgs_per_s') },
    { section: 'Cost per recipient', title: 'p50 latency', unit: 'ms', note: '', series: perRecipientCount('p50_ms') },
  );
  charts.push(
    { section: 'Key lookup, 100 000 addresses', title: 'Cold lookup, one at a time', unit: 'ms', note: 'Cache miss: SQL plus, for a keyed address, parsing the key.', series: [
      { figure: 'key_lookup_cold_ms', label: 'keyed address', color: COLORS.extra[0]! },
      { figure: 'key_lookup_unknown_ms', label: 'address without key', color: COLORS.extra[1]! },
    ] },
    { section: 'Key lookup, 100 000 addresses', title: 'Cold lookups/s, 10 in flight', unit: 'lookups/s', note: '', series: [{ figure: 'key_lookup_cold_c10_per_s', label: 'keyed addresses', color: COLORS.extra[0]! }] },
    { section: 'Key lookup, 100 000 addresses', title: 'Warm lookup (cached)', unit: 'µs', note: '', series: [{ figure: 'key_lookup_warm_us', label: 'keyed address', color: COLORS.extra[0]! }] },
  );
  const bySize = (metric: string, who: 'lacre' | 'passthrough', colorOffset: number): SeriesDef[] =>
    MB_SIZES.map((mb, i) => ({ figure: `big_${mb}mb_${who}_${metric}`, label: `${mb} MB, ${who === 'lacre' ? 'Lacre' : 'pass-through'}`, color: COLORS.extra[i + colorOffset]! }));
  charts.push(
    { section: 'Big messages', title: 'MB/s (cv25519 recipient, armored)', unit: 'MB/s', note: 'Input MB ÷ time from MAIL FROM to the final 250.', series: [...bySize('mb_per_s', 'lacre', 0), ...bySize('mb_per_s', 'passthrough', 2)], targets: targetLines(['big_200mb_lacre_mb_per_s']) },
    { section: 'Big messages', title: 'Lacre ÷ pass-through, MB/s', unit: 'ratio', note: '', series: bySize('ratio_to_ceiling', 'lacre', 0) },
    { section: 'Big messages', title: 'Peak RSS of lacre serve', unit: 'MB', note: 'Per message (VmHWM reset before each). Hold it against the target with PostgreSQL only.', series: [
      ...bySize('peak_rss_mb', 'lacre', 0),
      { figure: 'big_lacre_idle_rss_mb', label: 'idle, fresh process', color: COLORS.sink },
      { figure: 'lacre_load_peak_rss_mb', label: 'after the 4 KiB loads', color: COLORS.extra[4]! },
    ], targets: targetLines(['big_200mb_lacre_peak_rss_mb']) },
    { section: 'Big messages', title: 'RSS growth during the message', unit: 'MB', note: 'Peak − RSS just before it. Growth that scales with the size breaks the flat-memory rule.', series: bySize('rss_growth_mb', 'lacre', 0) },
    { section: 'Big messages', title: 'Output ÷ input bytes', unit: 'ratio', note: '~1.38 for ASCII armor; the bench fails outside 1.30–1.45.', series: bySize('output_ratio', 'lacre', 0) },
  );
  return charts;
}

function describeRecord(record: BenchRecord, move: CeilingMove | null): ReportRecord {
  const { machine } = record;
  return {
    label: recordLabel(record),
    commit: record.commit,
    dirty: record.dirty,
    date: record.date,
    subject: record.subject,
    database: record.database,
    mode: record.mode,
    machine: `${machine.cpus}× ${machine.model}, ${machine.memory_gb ?? '?'} GB, node ${machine.node}`,
    noise: noiseNote(move),
  };
}

function toSeries(def: SeriesDef, records: BenchRecord[]): ReportSeries {
  return {
    label: def.label,
    figure: def.figure,
    words: describeFigure(def.figure) ?? def.figure,
    color: def.color,
    hidden: def.hidden ?? false,
    points: records.map((record) => {
      const figure = record.figures[def.figure];
      return figure ? { value: figure.value, min: figure.min, max: figure.max, n: figure.n } : null;
    }),
  };
}

/** Every figure in the catalogue that some record has; every other figure gets a chart of its own under "Other". */
function buildCharts(records: BenchRecord[]): ReportChart[] {
  const present = new Set(records.flatMap((record) => Object.keys(record.figures)));
  const charted = new Set<string>();
  const charts: ReportChart[] = [];
  const add = (def: ChartDef) => {
    const series = def.series.filter((s) => present.has(s.figure));
    if (series.length === 0) return;
    for (const s of series) charted.add(s.figure);
    charts.push({ id: `chart-${charts.length}`, section: def.section, title: def.title, unit: def.unit, note: def.note, series: series.map((s) => toSeries(s, records)), targets: def.targets ?? [] });
  };
  for (const def of chartCatalogue()) add(def);
  for (const figure of present) {
    if (charted.has(figure)) continue;
    const unit = records.map((record) => record.figures[figure]?.unit).find((u) => u !== undefined) ?? '';
    const words = describeFigure(figure);
    const title = words ? `${words} (${figure})` : figure;
    add({ section: 'Other', title, unit, note: '', series: [{ figure, label: words ?? figure, color: COLORS.extra[0]! }], targets: targetLines([figure]) });
  }
  return charts;
}

function latestRows(records: BenchRecord[]): ReportRow[] {
  const latest = records[records.length - 1];
  if (!latest) return [];
  const previous = records[records.length - 2];
  return Object.entries(latest.figures).map(([figure, { value, min, max, n, unit }]) => {
    const before = previous?.figures[figure]?.value;
    return {
      figure,
      words: describeFigure(figure),
      value,
      min,
      max,
      n,
      unit,
      changePct: before === undefined || before === 0 ? null : ((value - before) / Math.abs(before)) * 100,
      target: targetText(figure),
      meets: meetsTarget(figure, value) ?? null,
    };
  });
}

function notices(records: BenchRecord[], moves: Array<CeilingMove | null>, checkout: Checkout): Notice[] {
  const latest = records[records.length - 1];
  if (!latest) return [];
  const noise = noiseSummary(records, moves);
  return [checkoutNotice(latest, checkout), ...(noise ? [{ level: 'info' as const, text: noise }] : [])];
}

/** Everything the page shows, from the records of one mode; `checkout` is where the newest record's commit stands. */
export function buildReportData(allRecords: BenchRecord[], mode: string, historyFile: string, checkout: Checkout): ReportData {
  const records = mode === 'all' ? allRecords : allRecords.filter((record) => record.mode === mode);
  const moves = ceilingMoves(records);
  const last = records.length - 1;
  const latest = records[last];
  const described = records.map((record, i) => describeRecord(record, moves[i] ?? null));
  return {
    generatedAt: new Date().toISOString(),
    historyFile,
    mode,
    skipped: allRecords.length - records.length,
    records: described,
    headline: latest ? headline(latest, moves[last] ?? null) : [],
    notices: notices(records, moves, checkout),
    charts: buildCharts(records),
    latest: latest ? { record: described[last]!, rows: latestRows(records) } : null,
  };
}

/** JSON that cannot close the <script> element it sits in. */
function scriptSafeJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

function withoutSourceMap(script: string): string {
  return script.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
}

function chartJsSource(): string {
  const entry = createRequire(import.meta.url).resolve('chart.js');
  return withoutSourceMap(readFileSync(join(dirname(entry), 'chart.umd.min.js'), 'utf8'));
}

export function renderReport(data: ReportData): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const template = readFileSync(join(REPOSITORY_ROOT, 'bench', 'report-template.html'), 'utf8');
  const page = withoutSourceMap(readFileSync(join(here, 'report-page.js'), 'utf8'));
  const parts: Record<string, string> = {
    '/*@CHART_JS@*/': chartJsSource(),
    '/*@PAGE_SCRIPT@*/': page,
    '@REPORT_DATA@': scriptSafeJson(data),
  };
  let html = template;
  for (const [placeholder, content] of Object.entries(parts)) {
    if (!html.includes(placeholder)) throw new Error(`report template lacks ${placeholder}`);
    html = html.split(placeholder).join(content);
  }
  return html;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      history: { type: 'string', default: DEFAULT_HISTORY },
      out: { type: 'string', default: join(REPOSITORY_ROOT, 'bench', 'report.html') },
      mode: { type: 'string', default: 'quick' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: npm run bench:report -- [--history FILE] [--out FILE] [--mode quick|full|all]\n');
    return;
  }
  if (!['quick', 'full', 'all'].includes(values.mode!)) throw new Error(`--mode must be quick, full or all, not ${values.mode}`);
  const history = values.history!;
  const records = readHistory(history);
  const newest = records.filter((record) => values.mode === 'all' || record.mode === values.mode).at(-1);
  const checkout = newest ? readCheckout(REPOSITORY_ROOT, newest.commit) : { kind: 'no-git' as const, reason: 'no record' };
  const data = buildReportData(records, values.mode!, relative(REPOSITORY_ROOT, history) || history, checkout);
  writeFileSync(values.out!, renderReport(data));
  process.stderr.write(`bench:report: ${data.records.length} ${values.mode} record(s)${data.skipped ? ` (${data.skipped} of another mode left out)` : ''}, ${data.charts.length} charts → ${values.out}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    main();
  } catch (error) {
    process.stderr.write(`bench:report failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}
