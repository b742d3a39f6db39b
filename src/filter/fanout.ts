import { once } from 'node:events';
import type { Writable } from 'node:stream';

/**
 * Writes every chunk to every sink, waiting for the slowest (backpressure). The caller ends the sinks, in
 * the order it needs.
 * Memory stays at a chunk plus each sink's own buffer, whatever the message size.
 * `signal` aborts the wait when any consumer has failed (a failed consumer never drains).
 */
export async function fanOut(
  chunks: AsyncIterable<Buffer>,
  sinks: readonly Writable[],
  signal: AbortSignal,
): Promise<void> {
  for await (const chunk of chunks) {
    signal.throwIfAborted();
    const full = sinks.filter((sink) => !sink.write(chunk));
    if (full.length > 0) await Promise.all(full.map((sink) => once(sink, 'drain', { signal })));
  }
  signal.throwIfAborted();
}
