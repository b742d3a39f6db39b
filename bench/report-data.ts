/** What bench/report.ts hands to the page script (bench/report-page.ts) as JSON: types only. */
import type { Notice, Sentence } from './report-text.js';

export interface ReportPoint {
  /** Median over the rounds. */
  value: number;
  min: number;
  max: number;
  n: number;
}

export interface ReportSeries {
  label: string;
  figure: string;
  /** The figure's identifier in words (the identifier itself when the report knows no words for it). */
  words: string;
  color: string;
  /** Drawn only once the reader clicks its legend entry. */
  hidden: boolean;
  /** One per record, null where the record lacks the figure. */
  points: Array<ReportPoint | null>;
}

export interface ReportTarget {
  label: string;
  value: number;
}

export interface ReportChart {
  id: string;
  section: string;
  title: string;
  unit: string;
  note: string;
  series: ReportSeries[];
  targets: ReportTarget[];
}

export interface ReportRecord {
  /** The commit, with `*` when the record was made with uncommitted changes: every point's axis label. */
  label: string;
  commit: string;
  dirty: boolean;
  date: string;
  subject: string;
  database: string;
  mode: string;
  machine: string;
  /** Why the record is machine noise (its ceiling moved more than 30 % against the record before); null when not. */
  noise: string | null;
}

export interface ReportRow {
  figure: string;
  /** The identifier in words; null when the report knows none. */
  words: string | null;
  value: number;
  min: number;
  max: number;
  n: number;
  unit: string;
  /** Change of the median against the previous record, in percent; null without one. */
  changePct: number | null;
  /** e.g. "≥ 0.5", when the issue sets a target for this figure. */
  target: string | null;
  meets: boolean | null;
}

export interface ReportData {
  generatedAt: string;
  historyFile: string;
  mode: string;
  /** Records in the history that were left out (another mode). */
  skipped: number;
  records: ReportRecord[];
  /** What the newest record measured, in sentences; empty without records. */
  headline: Sentence[];
  /** Whether the newest record is the checked-out commit, and which records are machine noise. */
  notices: Notice[];
  charts: ReportChart[];
  latest: { record: ReportRecord; rows: ReportRow[] } | null;
}
