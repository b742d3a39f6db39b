/**
 * Runs in the browser, inlined into bench/report.html after Chart.js (a global): draws bench/report.ts's data.
 * Each series is three datasets — min and max (a filled band, no legend) and the median line.
 */
import type { Chart as ChartClass, ChartConfiguration, ChartDataset, LegendItem, Plugin, ScriptableScaleContext, TooltipItem } from 'chart.js';
import type { ReportChart, ReportData, ReportRecord, ReportRow } from './report-data.js';
import type { Notice, Sentence } from './report-text.js';

declare const Chart: typeof ChartClass;

const BAND_ALPHA = '33';
const DATASETS_PER_SERIES = 3;
const NOISE_COLOR = '#b35900';
const NOISE_FILL = 'rgba(255, 140, 0, 0.13)';
/** Beyond this many records, a chart gets the whole width of the page so that every commit keeps its label. */
const WIDE_FROM_RECORDS = 20;

function element<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Every point's axis label: its commit (`*` = uncommitted changes); one line, so that rotated labels do not collide. */
function recordLabel(record: ReportRecord): string {
  return record.label;
}

/** An orange band, labelled "noise", behind each record whose ceiling moved more than 30 % against the one before. */
function noisePlugin(records: ReportRecord[]): Plugin<'line'> {
  return {
    id: 'machineNoise',
    beforeDatasetsDraw(chart) {
      const { ctx, chartArea, scales } = chart;
      const x = scales.x;
      if (!x) return;
      const half = records.length > 1 ? chartArea.width / (records.length - 1) / 2 : chartArea.width / 2;
      ctx.save();
      records.forEach((record, index) => {
        if (!record.noise) return;
        const centre = x.getPixelForValue(index);
        const left = Math.max(chartArea.left, centre - half);
        const right = Math.min(chartArea.right, centre + half);
        ctx.fillStyle = NOISE_FILL;
        ctx.fillRect(left, chartArea.top, right - left, chartArea.height);
        ctx.fillStyle = NOISE_COLOR;
        ctx.font = '10px system-ui, sans-serif';
        ctx.textAlign = 'center';
        ctx.textBaseline = 'top';
        ctx.fillText('noise', Math.min(Math.max(centre, chartArea.left + 14), chartArea.right - 14), chartArea.top + 2);
      });
      ctx.restore();
    },
  };
}

function formatNumber(value: number): string {
  return Math.abs(value) >= 100 ? value.toFixed(0) : Number(value.toPrecision(3)).toString();
}

function datasets(chart: ReportChart, recordCount: number): ChartDataset<'line', Array<number | null>>[] {
  const sets: ChartDataset<'line', Array<number | null>>[] = [];
  for (const series of chart.series) {
    const common = { hidden: series.hidden, pointRadius: 0, borderWidth: 0, spanGaps: true };
    sets.push({ ...common, label: `${series.label} min`, data: series.points.map((p) => p?.min ?? null), fill: false, borderColor: 'transparent' });
    sets.push({ ...common, label: `${series.label} max`, data: series.points.map((p) => p?.max ?? null), fill: '-1', borderColor: 'transparent', backgroundColor: series.color + BAND_ALPHA });
    sets.push({
      label: series.label,
      data: series.points.map((p) => p?.value ?? null),
      hidden: series.hidden,
      borderColor: series.color,
      backgroundColor: series.color,
      borderWidth: 2,
      pointRadius: 3,
      spanGaps: true,
      fill: false,
    });
  }
  for (const target of chart.targets) {
    // With a single record a line has no length: show the target as a dash at that point instead.
    sets.push({
      label: target.label,
      data: new Array<number>(recordCount).fill(target.value),
      borderColor: '#d62728',
      borderDash: [6, 4],
      borderWidth: 1.5,
      pointRadius: recordCount === 1 ? 12 : 0,
      pointStyle: 'line',
      fill: false,
    });
  }
  return sets;
}

/** Band datasets are neither in the legend nor in tooltips; a legend click toggles a series with its band. */
function isBand(datasetIndex: number, chart: ReportChart): boolean {
  return datasetIndex < chart.series.length * DATASETS_PER_SERIES && datasetIndex % DATASETS_PER_SERIES !== DATASETS_PER_SERIES - 1;
}

function chartConfig(chart: ReportChart, data: ReportData): ChartConfiguration<'line', Array<number | null>, string> {
  const records = data.records;
  return {
    type: 'line',
    data: { labels: records.map(recordLabel), datasets: datasets(chart, records.length) },
    plugins: [noisePlugin(records)],
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        // Every record keeps its commit on the axis: never skip a label, rotate them when they do not fit.
        x: { ticks: { autoSkip: false, maxRotation: 90, color: (context: ScriptableScaleContext) => (records[context.index]?.noise ? NOISE_COLOR : '#555') } },
        // Headroom above the highest value, so a target at the top stays visible.
        y: { beginAtZero: true, grace: '10%', title: { display: true, text: chart.unit } },
      },
      plugins: {
        legend: {
          labels: { filter: (item: LegendItem) => !isBand(item.datasetIndex ?? 0, chart), boxWidth: 14 },
          onClick: (_event, item, legend) => {
            const index = item.datasetIndex ?? 0;
            const owner = legend.chart;
            const first = index < chart.series.length * DATASETS_PER_SERIES ? index - (DATASETS_PER_SERIES - 1) : index;
            const visible = !owner.isDatasetVisible(index);
            for (let i = first; i <= index; i++) owner.setDatasetVisibility(i, visible);
            owner.update();
          },
        },
        tooltip: {
          filter: (item: TooltipItem<'line'>) => !isBand(item.datasetIndex, chart),
          callbacks: {
            title: (items) => {
              const record = records[items[0]?.dataIndex ?? 0];
              if (!record) return '';
              return [
                `${record.commit}${record.dirty ? ' (uncommitted changes)' : ''} — ${record.date}`,
                record.subject,
                `${record.machine}, ${record.database}`,
                ...(record.noise ? [`⚠ ${record.noise}`] : []),
              ];
            },
            label: (item) => {
              const seriesIndex = Math.floor(item.datasetIndex / DATASETS_PER_SERIES);
              const series = item.datasetIndex < chart.series.length * DATASETS_PER_SERIES ? chart.series[seriesIndex] : undefined;
              const point = series?.points[item.dataIndex];
              if (!series || !point) return `${item.dataset.label ?? ''}: ${formatNumber(Number(item.raw))} ${chart.unit}`;
              const range = point.n > 1 ? ` [${formatNumber(point.min)} – ${formatNumber(point.max)}, ${point.n} rounds]` : '';
              return `${series.label} (${series.figure}): ${formatNumber(point.value)} ${chart.unit}${range}`;
            },
          },
        },
      },
    },
  };
}

/** "Key lookup, 100 000 addresses" → "key-lookup-100-000-addresses": the section's anchor. */
function slug(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function renderCharts(data: ReportData, container: HTMLElement): number {
  let drawn = 0;
  let section = '';
  let grid: HTMLElement | undefined;
  for (const chart of data.charts) {
    if (chart.section !== section || !grid) {
      section = chart.section;
      container.append(element('h2', { id: slug(section) }, section));
      grid = element('div', { class: data.records.length > WIDE_FROM_RECORDS ? 'grid wide' : 'grid' });
      container.append(grid);
    }
    const card = element('figure', { class: 'card', id: chart.id });
    card.append(element('figcaption', {}, chart.title));
    if (chart.note) card.append(element('p', { class: 'note' }, chart.note));
    const holder = element('div', { class: 'canvas' });
    const canvas = element('canvas');
    holder.append(canvas);
    card.append(holder);
    grid.append(card);
    new Chart(canvas, chartConfig(chart, data));
    drawn += 1;
  }
  return drawn;
}

function renderLatest(data: ReportData, container: HTMLElement): void {
  if (!data.latest) return;
  const { record, rows } = data.latest;
  container.append(element('h2', { id: 'latest-record' }, `Latest record: ${record.label}, ${record.date}`));
  container.append(element('p', { class: 'note' }, `${record.subject} — ${record.machine}, database ${record.database}. Median over the rounds, [min – max]; change against the record before.`));
  if (record.noise) container.append(element('p', { class: 'notice warn' }, `This record is ${record.noise}: its changes in messages/s and MB/s reflect the machine, not Lacre.`));
  const table = element('table');
  const head = element('tr');
  for (const title of ['figure', 'identifier', 'median', 'min – max', 'unit', 'change', 'target']) head.append(element('th', {}, title));
  table.append(head);
  for (const row of rows) table.append(tableRow(row));
  container.append(table);
}

function tableRow(row: ReportRow): HTMLTableRowElement {
  const tr = element('tr');
  tr.append(element('td', {}, row.words ?? ''));
  const identifier = element('td');
  identifier.append(element('code', {}, row.figure));
  tr.append(identifier);
  tr.append(element('td', { class: 'num' }, formatNumber(row.value)));
  tr.append(element('td', { class: 'num' }, row.n > 1 ? `${formatNumber(row.min)} – ${formatNumber(row.max)}` : ''));
  tr.append(element('td', {}, row.unit));
  tr.append(element('td', { class: 'num' }, row.changePct === null ? '' : `${row.changePct >= 0 ? '+' : ''}${row.changePct.toFixed(1)} %`));
  const target = element('td', { class: row.meets === null ? '' : row.meets ? 'met' : 'missed' }, row.target === null ? '' : `${row.target} ${row.meets ? '✓' : '✗'}`);
  tr.append(target);
  return tr;
}

/** What the newest record measured, sentence by sentence, each followed by the identifiers of the figures it reads. */
function renderHeadline(sentences: Sentence[], notices: Notice[], container: HTMLElement): void {
  if (sentences.length === 0) return;
  const list = element('ul', { class: 'headline' });
  for (const sentence of sentences) {
    const item = element('li', sentence.warn ? { class: 'warn' } : {}, sentence.text);
    if (sentence.figures.length > 0) item.append(' ', element('code', { class: 'ids' }, sentence.figures.join(', ')));
    list.append(item);
  }
  container.append(list);
  for (const notice of notices) container.append(element('p', { class: `notice ${notice.level}` }, notice.text));
}

function main(): void {
  const source = document.getElementById('report-data')?.textContent;
  if (!source) throw new Error('report data missing');
  const data = JSON.parse(source) as ReportData;
  const summary = document.getElementById('summary')!;
  const left = data.skipped ? ` (${data.skipped} record(s) of another mode left out)` : '';
  summary.textContent =
    `${data.records.length} ${data.mode} record(s) from ${data.historyFile}${left}, generated ${data.generatedAt}. ` +
    'x axis: one point per record, oldest first, labelled with its commit (* = uncommitted changes); an orange band marks machine noise. ' +
    'Line: median over the rounds; shaded band: min – max. Hover a point for the commit subject and each figure’s identifier.';
  renderHeadline(data.headline, data.notices, document.getElementById('headline')!);
  const charts = document.getElementById('charts')!;
  if (data.records.length === 0) charts.append(element('p', {}, 'No records yet: run npm run bench:quick.'));
  const drawn = renderCharts(data, charts);
  renderLatest(data, document.getElementById('latest')!);
  // The sections exist only now: follow a #section link once they do.
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
  document.body.dataset.status = `ok ${drawn} charts`;
}

main();
