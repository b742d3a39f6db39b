import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { createLogger } from '../../src/log/logger.js';
import { RelayError } from '../../src/errors.js';
import { buffer } from 'node:stream/consumers';
import { Relay, poolIsKnown, streamForAttempt } from '../../src/delivery/reinject.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { TcpProxy, type CutRule } from '../helpers/tcp-proxy.js';

const envelope = { from: 'sender@example.org', to: ['alice@example.net'], use8BitMime: false };

function message(subject: string, body = 'Hello.\r\n'): Buffer {
  return Buffer.from(`From: sender@example.org\r\nTo: alice@example.net\r\nSubject: ${subject}\r\n\r\n${body}`);
}

/** Cuts a connection when the client starts its `nth` transaction on it (MAIL FROM): a kept-alive connection the relay dropped just as a message was handed to it. */
function cutAtTransaction(nth: number): () => CutRule {
  return () => {
    let transactions = 0;
    return (chunk) => /^MAIL FROM:/im.test(chunk.toString('latin1')) && ++transactions === nth;
  };
}

/** Cuts a connection when the client sends `marker` (inside DATA): the relay gone in the middle of a message. */
function cutOnBytes(marker: string): () => CutRule {
  return () => (chunk) => chunk.includes(marker);
}

it("nodemailer's pool is the version the direct path was written for (else Relay falls back to sendMail)", () => {
  assert.equal(poolIsKnown(), true);
});

for (const directToPool of [true, false]) describe(`reinjection through a pool of kept-alive connections (${directToPool ? 'direct' : 'sendMail'})`, () => {
  let sink: SmtpSink;
  const opened: { relay: Relay; proxy: TcpProxy }[] = [];

  before(async () => {
    sink = await SmtpSink.start();
  });
  after(async () => {
    for (const { relay, proxy } of opened) {
      relay.close();
      await proxy.stop();
    }
    await sink.stop();
  });

  async function relayThrough(cutRule: () => CutRule): Promise<Relay> {
    const proxy = new TcpProxy('127.0.0.1', sink.port, cutRule);
    await proxy.start();
    const relay = new Relay({ host: '127.0.0.1', port: proxy.port, max_connections: 1, timeout_seconds: 5 }, undefined, createLogger('silent'), { directToPool });
    opened.push({ relay, proxy });
    return relay;
  }

  it(directToPool ? 'sends a copy again on a new connection when the kept-alive one closed before the copy was read' : 'fails a copy for a retry (451) when its kept-alive connection closed before the copy was read', async () => {
    const relay = await relayThrough(cutAtTransaction(2));
    const first = message(`first ${directToPool}`);
    const second = message(`second ${directToPool}`);
    assert.equal((await relay.send(envelope, Readable.from([first]))).size, 0);
    const sent = relay.send(envelope, Readable.from([second]));
    if (directToPool) assert.equal((await sent).size, 0);
    else await assert.rejects(sent, (error: unknown) => error instanceof RelayError && !error.permanent);
    assert.deepEqual(
      sink.messages.filter((m) => m.data.includes(`${directToPool}\r\n`)).map((m) => m.data),
      directToPool ? [first, second] : [first],
    );
  });

  it('never sends the rest of a copy that was cut off in the middle: the copy fails for a retry', async () => {
    const relay = await relayThrough(cutOnBytes('CUT-HERE'));
    const before = sink.messages.length;
    const body = `${'x'.repeat(200)}\r\nCUT-HERE\r\n${'y'.repeat(200)}\r\n`;
    const sent = relay.send(envelope, Readable.from([message('cut', body)]));
    await assert.rejects(sent, (error: unknown) => error instanceof RelayError && !error.permanent);
    await new Promise((resolve) => setTimeout(resolve, 300)); // a wrongful retry would arrive in this time
    assert.equal(sink.messages.length, before);
  });

  it('a copy whose stream was destroyed while it waited for a connection fails without being sent', async () => {
    const relay = await relayThrough(cutAtTransaction(0));
    const before = sink.messages.length;
    const raw = new Readable({ read() {} });
    raw.on('error', () => undefined);
    const sent = relay.send(envelope, raw);
    raw.destroy(new Error('the message was aborted'));
    await assert.rejects(sent, (error: unknown) => error instanceof RelayError && !error.permanent);
    assert.equal(sink.messages.length, before);
  });
});

describe('the stream one delivery attempt reads', () => {
  it('takes nothing from the copy until it is read: after a failed attempt the next one reads the copy whole', async () => {
    const copy = Readable.from([Buffer.from('one '), Buffer.from('two '), Buffer.from('three')]);
    const first = streamForAttempt(copy);
    first.destroy(); // nodemailer destroys the message when the envelope fails
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(copy.destroyed, false);
    assert.equal((await buffer(streamForAttempt(copy))).toString(), 'one two three');
  });

  it('once a byte was read, a later attempt fails instead of sending the rest', async () => {
    const copy = new PassThrough();
    copy.write('the start, ');
    const first = streamForAttempt(copy);
    await new Promise<void>((resolve) => first.once('data', () => resolve()));
    first.destroy();
    copy.end('the end');
    await assert.rejects(buffer(streamForAttempt(copy)), (error: unknown) => error instanceof RelayError && /partly read/.test(error.message));
  });

  it('an attempt abandoned before anyone listened to it does not end the process when the copy fails later', async () => {
    const uncaught: Error[] = [];
    const record = (error: Error) => uncaught.push(error);
    process.on('uncaughtException', record);
    try {
      for (const failure of [new Error('the message was aborted'), undefined]) {
        const copy = new PassThrough();
        copy.on('error', () => undefined); // deliver()'s own listener
        streamForAttempt(copy); // nodemailer found the connection dead: it neither read nor listened to this view
        copy.destroy(failure);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      process.off('uncaughtException', record);
    }
    assert.deepEqual(uncaught.map((error) => error.message), []);
  });

  it('a new attempt releases the one before it: no listeners pile up on the copy', () => {
    const copy = new PassThrough();
    const listeners = () => copy.listenerCount('error') + copy.listenerCount('close');
    const first = streamForAttempt(copy);
    const withOne = listeners();
    for (let attempt = 0; attempt < 5; attempt++) streamForAttempt(copy);
    assert.equal(listeners(), withOne);
    assert.equal(first.destroyed, true);
  });

  it('passes on an error of the copy, and fails when the copy is withdrawn without one', async () => {
    const failing = new PassThrough();
    const view = streamForAttempt(failing);
    failing.write('x');
    failing.destroy(new Error('encryption failed'));
    await assert.rejects(buffer(view), /encryption failed/);

    const withdrawn = new PassThrough();
    const reading = buffer(streamForAttempt(withdrawn));
    withdrawn.write('half');
    await new Promise((resolve) => setImmediate(resolve));
    withdrawn.destroy();
    await assert.rejects(reading, /withdrawn/);
  });
});

