import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { BoxDownstream, BoxScheme, Downstream, OutboundEnvelope, RecipientRejections } from '../filter/ports.js';
import type { DownstreamName, LacreMetrics } from '../metrics/metrics.js';

/** Counts the bytes that pass, without holding any. */
class ByteCounter extends Transform {
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

/**
 * The copy as the downstream reads it, counted; an error or an early end on either side ends both. Both sides
 * get an 'error' listener: the counter has no other while the copy waits for a relay connection, and an
 * unheard error would end the process. Wired by hand rather than with stream.pipeline(), which per copy cost
 * ~5 % of the event loop under load of small messages (it makes an AbortController and aborts it, with a
 * DOMException, when the copy ends).
 */
function counted(raw: Readable): ByteCounter {
  const counter = new ByteCounter();
  raw.on('error', (error) => counter.destroy(error));
  raw.on('close', () => {
    if (!raw.readableEnded && !counter.destroyed) counter.destroy(new Error('the copy ended before its last byte'));
  });
  counter.on('error', () => raw.destroy());
  counter.on('close', () => {
    if (!counter.writableFinished) raw.destroy();
  });
  raw.pipe(counter);
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
