import { pino, type DestinationStream, type Logger } from 'pino';
import type { Config } from '../config/schema.js';

export type { Logger } from 'pino';
export type LogLevel = Config['log']['level'];

/**
 * The root logger: one JSON object per line on stdout (or `destination`), ISO timestamps,
 * `level` as its name ("info"), and `service: "lacre"` on every line.
 * Callers never pass subjects or bodies (DESIGN rule 5); nothing is redacted here.
 */
export function createLogger(level: LogLevel | (string & {}) = 'info', destination?: DestinationStream | NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'lacre' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Synchronous writes: a line logged just before a crash or exit is not lost.
    (destination as DestinationStream | undefined) ?? pino.destination({ dest: 1, sync: true }),
  );
}

/**
 * The logger a command should use: log.file when configured, else the command's own default — stdout for
 * `serve`, stderr for one-shot commands, nowhere for `lacre pipe` (Postfix's pipe(8) would put anything it
 * prints into delivery status notices, recipients included).
 */
export function createConfiguredLogger(config: Config['log'], fallback: 'stdout' | 'stderr' | 'none'): Logger {
  if (config.file) return createLogger(config.level, pino.destination({ dest: config.file, sync: true, mkdir: true, append: true }));
  if (fallback === 'none') return createLogger('silent');
  return createLogger(config.level, fallback === 'stderr' ? pino.destination({ dest: 2, sync: true }) : undefined);
}
