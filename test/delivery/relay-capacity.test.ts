/**
 * Reinjection into a listener that serves fewer connections at once than relay.max_connections (Postfix's
 * FILTER_README gives its reinjection smtpd maxproc 10; Lacre's pool opens up to 20): the connections over the
 * listener's capacity are accepted by the kernel but never greeted.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { createLogger } from '../../src/log/logger.js';
import { RelayError } from '../../src/errors.js';
import { Relay } from '../../src/delivery/reinject.js';
import { RelayCapacity } from '../../src/delivery/relay-capacity.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { MaxprocListener } from '../helpers/maxproc-listener.js';

interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

/** A logger whose JSON lines the test reads. */
function capturingLogger(): { logger: ReturnType<typeof createLogger>; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) lines.push(JSON.parse(line) as LogLine);
      callback();
    },
  });
  return { logger: createLogger('info', sink), lines };
}

const capacityWarnings = (lines: LogLine[]) =>
  lines.filter((line) => line.level === 'warn' && line.msg.includes('maxproc') && line.msg.includes('relay.max_connections'));

function message(tag: string): Buffer {
  return Buffer.from(`From: sender@example.org\r\nTo: alice@example.net\r\nMessage-ID: <${tag}@example.org>\r\nSubject: burst\r\n\r\nHello.\r\n`);
}

/** Sends `count` copies at once; resolves with what each send gave. */
async function burst(relay: Relay, tag: string, count: number): Promise<PromiseSettledResult<unknown>[]> {
  const sends = Array.from({ length: count }, (_, i) =>
    relay.send({ from: 'sender@example.org', to: [`rcpt${i}@example.net`], use8BitMime: false }, Readable.from([message(`${tag}-${i}`)])),
  );
  return Promise.allSettled(sends);
}

function failures(results: PromiseSettledResult<unknown>[]): string[] {
  return results.flatMap((result) => {
    if (result.status === 'rejected') return [String(result.reason)];
    const rejections = result.value as Map<string, unknown>;
    return rejections.size > 0 ? [`rejected recipients: ${[...rejections.keys()].join(', ')}`] : [];
  });
}

/** How many times the sink received each message of a burst. */
function receivedCounts(sink: SmtpSink, tag: string, count: number): number[] {
  return Array.from({ length: count }, (_, i) => sink.messages.filter((m) => m.data.includes(`<${tag}-${i}@example.org>`)).length);
}

describe('reinjection into a listener that greets fewer connections than relay.max_connections (maxproc)', () => {
  let sink: SmtpSink;
  const opened: { relay: Relay; listener: MaxprocListener }[] = [];

  before(async () => {
    sink = await SmtpSink.start();
  });
  after(async () => {
    for (const { relay, listener } of opened) {
      relay.close();
      await listener.stop();
    }
    await sink.stop();
  });

  async function relayBehind(capacity: number, relayConfig: { max_connections: number; timeout_seconds: number }, options: { capacityRetryMs?: number } = {}) {
    const listener = await MaxprocListener.start(sink.port, capacity);
    const { logger, lines } = capturingLogger();
    // A short greeting timeout keeps the test quick; production waits 10 s.
    const relay = new Relay({ host: '127.0.0.1', port: listener.port, ...relayConfig }, undefined, logger, { greetingTimeoutMs: 400, ...options });
    opened.push({ relay, listener });
    return { relay, listener, lines };
  }

  it('delivers every copy of a burst exactly once, learns the capacity and says so once, naming maxproc and relay.max_connections', async () => {
    const { relay, listener, lines } = await relayBehind(3, { max_connections: 6, timeout_seconds: 30 });
    const results = await burst(relay, 'first', 24);
    assert.deepEqual(failures(results), []);
    assert.deepEqual(receivedCounts(sink, 'first', 24), Array(24).fill(1));
    assert.ok(listener.heldTotal > 0, 'the burst opened connections the listener did not greet');

    const warnings = capacityWarnings(lines);
    assert.equal(warnings.length, 1, JSON.stringify(lines.filter((line) => line.level !== 'info')));
    assert.equal(warnings[0]!.capacity, 3);
    assert.equal(warnings[0]!.maxConnections, 6);
    assert.equal(warnings[0]!.relay, `127.0.0.1:${listener.port}`);
    assert.equal(relay.poolState().maxConnections, 3);

    // Learned: the next burst opens no connection over the capacity, and nothing is said again.
    const held = listener.heldTotal;
    assert.deepEqual(failures(await burst(relay, 'second', 24)), []);
    assert.deepEqual(receivedCounts(sink, 'second', 24), Array(24).fill(1));
    assert.equal(listener.heldTotal, held, 'no connection waited for a greeting after the capacity was learned');
    assert.equal(capacityWarnings(lines).length, 1);
  });

  it('tries relay.max_connections again after a while: a raised maxproc is used without a restart', async () => {
    const { relay, listener, lines } = await relayBehind(2, { max_connections: 6, timeout_seconds: 30 }, { capacityRetryMs: 200 });
    assert.deepEqual(failures(await burst(relay, 'before-reload', 12)), []);
    assert.equal(relay.poolState().maxConnections, 2);
    listener.setCapacity(4);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(failures(await burst(relay, 'after-reload', 24)), []);
    assert.deepEqual(receivedCounts(sink, 'after-reload', 24), Array(24).fill(1));
    assert.ok(listener.mostServed > 2, `the pool used the raised capacity (at most ${listener.mostServed} connections served at once)`);
    assert.equal(capacityWarnings(lines).length, 1, 'said once per process');
  });

  // Bounded: a copy that waits for a greeting forever is what this test is about; node:test ends it here.
  it('a copy that no connection ever gets a greeting for fails with a 4xx after relay.timeout_seconds, having waited', { timeout: 30_000 }, async () => {
    const { relay, listener, lines } = await relayBehind(0, { max_connections: 2, timeout_seconds: 1.5 });
    const results = await burst(relay, 'never', 1);
    assert.equal(results[0]!.status, 'rejected');
    const reason = (results[0] as PromiseRejectedResult).reason as unknown;
    assert.ok(reason instanceof RelayError && !reason.permanent, String(reason));
    assert.match(reason.message, new RegExp(`^relay: no connection to 127\\.0\\.0\\.1:${listener.port} was ready within 1\\.5 s$`));
    assert.ok(listener.heldTotal > 1, 'it tried a new connection after the first one was not greeted');
    assert.deepEqual(receivedCounts(sink, 'never', 1), [0]);
    assert.equal(capacityWarnings(lines).length, 0, 'nothing was greeted: no capacity to learn');
  });
});

describe('the relay capacity Lacre learns', () => {
  it('shrinks to the greeted connections, says so the first time only, and goes back to the configured size after the retry period', () => {
    const capacity = new RelayCapacity(20, 1_000);
    assert.equal(capacity.learn(0, 0), false, 'nothing greeted: the relay is down, not small');
    assert.equal(capacity.current(0), 20);
    assert.equal(capacity.learn(10, 0), true);
    assert.equal(capacity.current(999), 10);
    assert.equal(capacity.learn(8, 500), false, 'smaller again: learned, not said again');
    assert.equal(capacity.current(1_499), 8, 'the period runs from the latest learning');
    assert.equal(capacity.current(1_500), 20);
    assert.equal(capacity.learn(10, 2_000), false);
    assert.equal(capacity.current(2_000), 10);
  });
});
