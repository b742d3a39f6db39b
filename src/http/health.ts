/**
 * Readiness: can Lacre deliver right now? The same checks serve GET /readyz, `lacre check` and the
 * lacre_ready* gauges. Each check is bounded by a timeout; they run in parallel.
 */
import type { Config } from '../config/schema.js';
import { maskUrlPassword } from '../config/load.js';
import type { Database } from '../db/types.js';
import { withTimeout } from '../metrics/timeout.js';
import { errorMessage } from '../errors.js';

export const CHECK_TIMEOUT_MS = 5_000;

export interface ReadinessCheck {
  readonly name: string;
  /** Resolves when healthy; rejects with an error that says what is wrong. */
  run(): Promise<void>;
}

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly ms: number;
  readonly error?: string;
}

export interface ReadinessReport {
  readonly ready: boolean;
  readonly checks: CheckResult[];
}

/** What the checks talk to: the runtime's own database, relay and box (or ones opened by `lacre check`). */
export interface CheckTargets {
  readonly config: Config;
  readonly db: Pick<Database, 'query'>;
  readonly relay: { verify(): Promise<boolean> };
  readonly box?: { reachable(): Promise<boolean> } | undefined;
}

export function readinessChecks(targets: CheckTargets): ReadinessCheck[] {
  const { config, db, relay, box } = targets;
  const checks: ReadinessCheck[] = [
    {
      name: 'database',
      run: async () => {
        await db.query('select 1');
      },
    },
    {
      name: 'relay',
      run: async () => {
        if (!(await relay.verify())) throw new Error(`no SMTP greeting from ${config.relay.host}:${config.relay.port}`);
      },
    },
  ];
  const url = config.incoming_box.url;
  if (box && url !== undefined) {
    checks.push({
      name: 'box',
      run: async () => {
        if (!(await box.reachable())) throw new Error(`Incoming Box ${maskUrlPassword(url)} does not answer`);
      },
    });
  }
  return checks;
}

export async function runChecks(checks: readonly ReadinessCheck[], timeoutMs = CHECK_TIMEOUT_MS): Promise<ReadinessReport> {
  const results = await Promise.all(checks.map((check) => runCheck(check, timeoutMs)));
  return { ready: results.every((result) => result.ok), checks: results };
}

async function runCheck(check: ReadinessCheck, timeoutMs: number): Promise<CheckResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  try {
    await withTimeout(check.run(), timeoutMs, 'no answer');
    return { name: check.name, ok: true, ms: elapsed() };
  } catch (error) {
    return { name: check.name, ok: false, ms: elapsed(), error: errorMessage(error) };
  }
}

/**
 * Runs the checks on demand (GET /readyz: always a fresh run) and for scrapes (a run at most every
 * maxAgeMs, so that Prometheus does not open an SMTP connection to Postfix at every scrape of every metric).
 * Concurrent callers share one run.
 */
export class HealthMonitor {
  private last: { report: ReadinessReport; atMs: number } | undefined;
  private running: Promise<ReadinessReport> | undefined;

  constructor(
    private readonly checks: readonly ReadinessCheck[],
    private readonly timeoutMs = CHECK_TIMEOUT_MS,
  ) {}

  check(): Promise<ReadinessReport> {
    this.running ??= runChecks(this.checks, this.timeoutMs)
      .then((report) => {
        this.last = { report, atMs: Date.now() };
        return report;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  recent(maxAgeMs = 10_000): Promise<ReadinessReport> {
    if (this.last && Date.now() - this.last.atMs < maxAgeMs) return Promise.resolve(this.last.report);
    return this.check();
  }
}
