import { Transform, pipeline, type Readable, type TransformCallback } from 'node:stream';
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
 * The copy as the downstream reads it, counted; an error on either side ends both. stream.pipeline(), not
 * pipe(): it also takes the counter's own 'error', which has no other listener while the copy waits for a
 * relay connection, and would otherwise end the process.
 */
function counted(raw: Readable): ByteCounter {
  const counter = new ByteCounter();
  pipeline(raw, counter, () => undefined);
  return counter;
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
