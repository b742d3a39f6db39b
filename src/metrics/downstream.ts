import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { BoxDownstream, BoxScheme, Downstream, OutboundEnvelope, RecipientRejections } from '../filter/pipeline.js';
import type { DownstreamName, LacreMetrics } from './metrics.js';

/** Counts the bytes that pass, without holding any. */
class ByteCounter extends Transform {
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

/**
 * The copy as the downstream reads it, counted; an error on either side ends both. pipe() and two listeners
 * rather than stream.pipeline(), whose per-call AbortSignal and end-of-stream bookkeeping showed in the
 * per-message profile.
 */
function counted(raw: Readable): ByteCounter {
  const counter = new ByteCounter();
  raw.once('error', (error) => counter.destroy(error));
  counter.once('close', () => {
    if (!raw.readableEnded) raw.destroy();
  });
  return raw.pipe(counter);
}

async function metered<T>(metrics: LacreMetrics, name: DownstreamName, raw: Readable, send: (counted: Readable) => Promise<T>): Promise<T> {
  const counter = counted(raw);
  metrics.sendStarted(name);
  let accepted = false;
  try {
    const result = await send(counter);
    accepted = true;
    return result;
  } finally {
    metrics.sendFinished(name, accepted ? counter.bytes : undefined);
  }
}

/** The relay, with bytes of accepted copies and sends in flight counted. */
export function meteredRelay(relay: Downstream, metrics: LacreMetrics): Downstream {
  return {
    send: (envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> =>
      metered(metrics, 'relay', raw, (counter) => relay.send(envelope, counter)),
  };
}

/** The Incoming Box, likewise. */
export function meteredBox(box: BoxDownstream, metrics: LacreMetrics): BoxDownstream {
  return {
    put: (user: string, blobId: string, scheme: BoxScheme, raw: Readable): Promise<void> =>
      metered(metrics, 'box', raw, (counter) => box.put(user, blobId, scheme, counter)),
  };
}
