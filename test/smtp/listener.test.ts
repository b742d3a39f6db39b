import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { startInProcessListener, type InProcessListener } from '../helpers/in-process-listener.js';
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
  let sink: SmtpSink;
  let lacre: InProcessListener;
  let port = -1;

  before(async () => {
    sink = await SmtpSink.start();
    lacre = await startInProcessListener(sink.port);
    port = lacre.port;
  });
  after(async () => {
    await lacre?.close();
    await sink?.stop();
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
