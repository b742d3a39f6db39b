import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/**
 * Whether this thread's event loop has been busy lately: its utilization (the share of time spent running
 * rather than waiting) over the last completed window of `windowMs`, against `threshold`. Read on demand, no
 * timer; the first window counts as idle.
 */
export class EventLoopGauge {
  private windowStart: EventLoopUtilization;
  private busy = false;

  constructor(
    private readonly threshold: number,
    private readonly windowMs = 100,
  ) {
    this.windowStart = performance.eventLoopUtilization();
  }

  isBusy(): boolean {
    const now = performance.eventLoopUtilization();
    const window = performance.eventLoopUtilization(now, this.windowStart);
    if (window.idle + window.active >= this.windowMs) {
      this.busy = window.utilization >= this.threshold;
      this.windowStart = now;
    }
    return this.busy;
  }
}
