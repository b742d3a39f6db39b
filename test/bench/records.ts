/** Bench records for the report's tests: a record of the reference machine holding the given medians. */
import type { BenchRecord } from '../../bench/record.js';
import type { Figures } from '../../bench/stats.js';

/** The figures of the newest quick record in bench/history.jsonl (0b090e6) that the headline reads. */
export const NEWEST_FIGURES: Record<string, number> = {
  key_lookup_cold_ms: 2.7,
  key_lookup_cold_c10_per_s: 541.16,
  key_lookup_unknown_ms: 0.544,
  key_lookup_warm_us: 3.19,
  passthrough_c10_msgs_per_s: 1225.6,
  passthrough_c10_p50_ms: 7.64,
  passthrough_c10_p99_ms: 13.5,
  passthrough_c10_cpu_ms_per_msg: 1.04,
  lacre_cv25519_c10_msgs_per_s: 1069.4,
  lacre_cv25519_c10_p50_ms: 8.11,
  lacre_cv25519_c10_p99_ms: 21.6,
  lacre_cv25519_c10_cpu_ms_per_msg: 1.15,
  lacre_rsa3072_c10_msgs_per_s: 1201.2,
  lacre_rsa3072_c10_p50_ms: 7.77,
  lacre_rsa3072_c10_p99_ms: 16.4,
  lacre_rsa3072_c10_cpu_ms_per_msg: 1.05,
  lacre_cv25519_c10_ratio_to_ceiling: 0.684,
  lacre_cv25519_c10_p99_added_ms: 6.87,
  lacre_rsa3072_c10_ratio_to_ceiling: 0.821,
  lacre_rsa3072_c10_p99_added_ms: 2,
  lacre_load_peak_rss_mb: 196.82,
  recipient_extra_ms: 0.272,
  recipient_extra_cpu_ms: 0.363,
  big_lacre_idle_rss_mb: 97.2,
  big_10mb_passthrough_mb_per_s: 100.16,
  big_10mb_lacre_mb_per_s: 72.8,
  big_10mb_lacre_ratio_to_ceiling: 0.746,
  big_10mb_lacre_peak_rss_mb: 134.24,
  big_10mb_lacre_rss_growth_mb: 9.63,
  big_10mb_lacre_output_ratio: 1.38,
  big_200mb_passthrough_mb_per_s: 136.07,
  big_200mb_lacre_mb_per_s: 106.02,
  big_200mb_lacre_ratio_to_ceiling: 0.779,
  big_200mb_lacre_peak_rss_mb: 138.05,
  big_200mb_lacre_rss_growth_mb: 3.26,
  big_200mb_lacre_output_ratio: 1.38,
};

function unitOf(figure: string): string {
  if (figure.endsWith('_msgs_per_s')) return 'msg/s';
  if (figure.endsWith('_mb_per_s')) return 'MB/s';
  if (figure.endsWith('_per_s')) return 'lookups/s';
  if (figure.endsWith('_us')) return 'µs';
  if (figure.endsWith('_ms') || figure.endsWith('_ms_per_msg') || figure.endsWith('_ms_per_recipient')) return 'ms';
  if (figure.endsWith('_mb')) return 'MB';
  return 'ratio';
}

export function benchRecord(commit: string, medians: Record<string, number>, overrides: Partial<BenchRecord> = {}): BenchRecord {
  const figures: Figures = {};
  for (const [name, value] of Object.entries(medians)) figures[name] = { value, min: value * 0.95, max: value * 1.05, n: 3, unit: unitOf(name) };
  return {
    version: 2,
    commit,
    dirty: false,
    subject: `subject of ${commit}`,
    date: '2026-11-24T19:36:00.589Z',
    machine: { cpus: 2, model: 'AMD EPYC', memory_gb: 24, kernel: '6.18', node: 'v20.20.2' },
    mode: 'quick',
    database: 'postgres',
    settings: { rounds: 3, message_bytes: 4096, concurrency: [10, 50, 1], key_store_addresses: 100000 },
    figures,
    ...overrides,
  };
}
