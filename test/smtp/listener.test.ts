import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createSmtpListener, type SmtpListener } from '../../src/smtp/listener.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

type SocketWrites = { _write: (...args: unknown[]) => void; _writev: (...args: unknown[]) => void };

/** Records every write (one system call each) the sockets bound to `port` make, as the replies it carried. */
function recordWrites(port: () => number): { writes: string[][]; restore(): void } {
  const prototype = Socket.prototype as unknown as SocketWrites;
  const { _write: write, _writev: writev } = prototype;
  const writes: string[][] = [];
  prototype._write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
    if (this.localPort === port()) writes.push([String(chunk)]);
    return write.call(this, chunk, ...rest);
  };
  prototype._writev = function (this: Socket, chunks: unknown, ...rest: unknown[]) {
    if (this.localPort === port()) writes.push((chunks as Array<{ chunk: unknown }>).map(({ chunk }) => String(chunk)));
    return writev.call(this, chunks, ...rest);
  };
  return { writes, restore: () => Object.assign(prototype, { _write: write, _writev: writev }) };
}

describe('SMTP listener (in this process, embedded database, real relay sink)', () => {
  let dataDir: string;
  let sink: SmtpSink;
  let runtime: Runtime;
  let listener: SmtpListener;
  let port = -1;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lacre-listener-'));
    sink = await SmtpSink.start();
    const config = loadConfig({ env: { LACRE_DATABASE_DATA_DIR: dataDir, LACRE_RELAY_PORT: String(sink.port), LACRE_SMTP_LISTEN: '127.0.0.1:0' } });
    const logger = createLogger('silent');
    runtime = await openRuntime(config, logger);
    listener = createSmtpListener(config, runtime.filter, logger);
    port = (await listener.listen()).port;
  });
  after(async () => {
    await listener?.close();
    await runtime?.close();
    await sink?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('answers commands a client pipelined in one write: MAIL, RCPT and DATA replies leave together', async () => {
    const { client } = await RawSmtpClient.connect(port);
    await client.command('EHLO test.example');
    // A first transaction looks the recipient up (the key cache is cold); the second is the one measured.
    for (const round of ['cold', 'measured']) {
      const recorded = round === 'measured' ? recordWrites(() => port) : undefined;
      try {
        client.write('MAIL FROM:<s@example.net>\r\nRCPT TO:<nokey@example.test>\r\nDATA\r\n');
        assert.match(await client.reply(), /^250 /);
        assert.match(await client.reply(), /^250 /);
        assert.match(await client.reply(), /^354 /);
        client.write('Subject: pipelined\r\n\r\nhello\r\n.\r\n');
        assert.match(await client.reply(), /^250 /);
      } finally {
        recorded?.restore();
      }
      if (!recorded) continue;
      const replies = recorded.writes.map((write) => write.map((reply) => reply.slice(0, 3)));
      assert.deepEqual(replies, [['250', '250', '354'], ['250']], JSON.stringify(recorded.writes));
    }
    await client.close();
    assert.equal(sink.messages.length, 2);
  });
});
