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
