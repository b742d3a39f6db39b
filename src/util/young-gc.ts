import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A young-generation collection after every few megabytes of a big message.
 *
 * Each 64 KiB of a big message passes through several buffers: the socket read, smtp-server's copy, the
 * cipher's output, the armor (~4.4x the input in all). They die at once, but their memory lies outside V8's heap
 * and is only given back when a collection finds their small JS objects dead. V8 starts one for outside memory
 * only after 64 MB has piled up, and the young generation fills slowly with objects that small, so a 200 MB
 * message took the process from ~100 to ~160 MB. A young-generation collection (a scavenge: well under a
 * millisecond, it visits only what is still alive) every 2 MB streamed kept the peak at ~120 MB, and the
 * message went faster, its memory staying warm (`npm run bench -- --only big`, see the closing note of #4).
 *
 * Node has no API for a collection. The `gc` function of V8's expose-gc extension is taken from a fresh vm
 * context, as Jest does for --logHeapUsage; where that fails, streaming goes on without it.
 */

export const COLLECT_EVERY_BYTES = 2 * 1024 * 1024;

type Collect = (options: { type: 'minor' | 'major' }) => void;

/** Undefined: not looked up yet; null: not available in this runtime. */
let collect: Collect | null | undefined;
let streamedSinceCollection = 0;
let collections = 0;

function collector(): Collect | null {
  if (collect !== undefined) return collect;
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    collect = typeof gc === 'function' ? (gc as Collect) : null;
  } catch {
    collect = null;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
  return collect;
}

/** Counts bytes a big message streamed; every COLLECT_EVERY_BYTES of them (all messages together), a collection. */
export function noteStreamedBytes(bytes: number): void {
  streamedSinceCollection += bytes;
  if (streamedSinceCollection < COLLECT_EVERY_BYTES) return;
  streamedSinceCollection = 0;
  const gc = collector();
  if (!gc) return;
  gc({ type: 'minor' });
  collections++;
}

/** Collections started so far (for tests). */
export function youngCollections(): number {
  return collections;
}

/** Passes chunks on, counting them with noteStreamedBytes. */
export async function* countedForCollection(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    noteStreamedBytes(chunk.length);
    yield chunk;
  }
}
