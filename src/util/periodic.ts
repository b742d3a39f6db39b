/**
 * A background job of `lacre serve` (ledger purge, expiry notices): runs now, then every interval, never two runs
 * at once; a failing run is reported to `onError` and the next one tries again. The timer does not keep the
 * process alive.
 */
export interface PeriodicJob {
  /** Stops the timer and waits for a run in progress. */
  close(): Promise<void>;
}

export function runPeriodically(task: () => Promise<void>, intervalMs: number, onError: (error: unknown) => void): PeriodicJob {
  let running: Promise<void> | undefined;
  const startTask = (): Promise<void> => {
    try {
      return task();
    } catch (error) {
      return Promise.reject(error);
    }
  };
  const run = () => {
    // A task that throws before its first await, or an onError that throws, stays in here.
    running ??= startTask()
      .catch((error: unknown) => {
        try {
          onError(error);
        } catch {
          // Reporting failed: the next run tries again all the same.
        }
      })
      .finally(() => {
        running = undefined;
      });
  };
  const timer = setInterval(run, intervalMs);
  timer.unref();
  run();
  return {
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
