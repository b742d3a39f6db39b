import { killAll } from './children.js';

/**
 * What every bench script does around its measurements: timestamped progress lines on stderr, cleanups run
 * once, newest first (at the end, or on Ctrl-C / SIGTERM, which also kill the children at once and exit 130),
 * and the exit code of the script's main function.
 */
export class BenchLifecycle {
  readonly startedAt = Date.now();
  private readonly cleanups: Array<() => Promise<unknown>> = [];
  private interrupted = false;

  /** `name` prefixes every progress line; a signal gives the cleanups at most `graceMs`. */
  constructor(
    private readonly name: string,
    private readonly graceMs: number,
  ) {}

  readonly progress = (line: string): void => {
    process.stderr.write(`${this.name} ${((Date.now() - this.startedAt) / 1000).toFixed(1).padStart(5)}s: ${line}\n`);
  };

  onCleanup(cleanup: () => Promise<unknown>): void {
    this.cleanups.push(cleanup);
  }

  async cleanUp(): Promise<void> {
    for (const cleanup of this.cleanups.splice(0).reverse()) {
      await cleanup().catch((error: unknown) => this.progress(`cleanup failed: ${String(error)}`));
    }
  }

  /** Runs `main`, exits 0 when it resolves, 1 when it fails (unless a signal is already stopping the run). */
  run(main: () => Promise<void>): void {
    this.stopOnSignal();
    main().then(
      () => process.exit(0),
      (error: unknown) => {
        if (this.interrupted) return; // the signal handler exits once it has cleaned up
        process.stderr.write(`${this.name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
        process.exit(1);
      },
    );
  }

  private stopOnSignal(): void {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        this.interrupted = true;
        this.progress(`${signal}: stopping`);
        // Cleanups cut the bench's own connections (a dropped database, a stopped server): their errors no longer matter.
        process.on('uncaughtException', (error) => this.progress(`after ${signal}: ${error.message}`));
        killAll();
        const grace = new Promise((resolve) => setTimeout(resolve, this.graceMs));
        void Promise.race([this.cleanUp(), grace]).then(() => process.exit(130));
      });
    }
  }
}
