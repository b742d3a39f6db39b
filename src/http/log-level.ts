import type { Logger, LogLevel } from '../log/logger.js';

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && (LOG_LEVELS as readonly string[]).includes(value);
}

export interface LevelChange {
  readonly previous: LogLevel;
  readonly level: LogLevel;
}

/**
 * Changes the root logger's level at run time (child loggers follow it). The change itself is logged at
 * info while the more verbose of the two levels is in force, so the line shows in either direction.
 */
export class LogLevelControl {
  constructor(
    private readonly logger: Logger,
    /** The configured level, which SIGUSR2 returns to from debug. */
    private readonly configured: LogLevel,
  ) {}

  get level(): LogLevel {
    return this.logger.level as LogLevel;
  }

  set(level: LogLevel, via: string): LevelChange {
    const previous = this.level;
    // Not "level": pino's own field on every line.
    const fields = { previous, next: level, via };
    const moreVerbose = this.rank(level) < this.rank(previous);
    if (moreVerbose) this.logger.level = level;
    this.logger.info(fields, 'log level changed');
    if (!moreVerbose) this.logger.level = level;
    return { previous, level };
  }

  /** SIGUSR2: to debug, and from debug back to the configured level (info when debug was configured). */
  toggleDebug(via: string): LevelChange {
    if (this.level !== 'debug') return this.set('debug', via);
    return this.set(this.configured === 'debug' ? 'info' : this.configured, via);
  }

  /** Toggles on every `signal` until the returned function is called. */
  toggleOnSignal(signal: NodeJS.Signals = 'SIGUSR2'): () => void {
    const toggle = () => this.toggleDebug(signal);
    process.on(signal, toggle);
    return () => process.off(signal, toggle);
  }

  private rank(level: LogLevel): number {
    return level === 'silent' ? Infinity : this.logger.levels.values[level]!;
  }
}
