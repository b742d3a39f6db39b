/**
 * SMTP smuggling (the 2023 end-of-data family): a message whose content holds an end-of-data look-alike
 * (<LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF>, <CR><LF>.<LF>, <CR><LF>.<CR>) followed by SMTP commands. Lacre's
 * listener (smtp-server) ends DATA only at <CR><LF>.<CR><LF>, so the rest is content of the one message; and
 * what Lacre reinjects (nodemailer's DATA escaping, src/delivery/dot-stuffing.ts) has every bare CR and LF made
 * CRLF and every line-leading dot doubled, so no hop after Lacre can read an end of data inside it either. The
 * relay here is a raw TCP sink that keeps the bytes on the wire.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { startInProcessListener, type InProcessListener } from '../helpers/in-process-listener.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';

interface WireTransaction {
  commands: string[];
  /** DATA as sent, escaping included, up to and without the final <CR><LF>.<CR><LF>. */
  data: Buffer;
}

/** A relay that speaks just enough SMTP (no extensions, so no pipelining) and keeps the raw DATA bytes. */
async function startWireSink(): Promise<{ port: number; transactions: WireTransaction[]; close(): Promise<void> }> {
  const transactions: WireTransaction[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffer = Buffer.alloc(0);
    let current: WireTransaction = { commands: [], data: Buffer.alloc(0) };
    let inData = false;
    socket.write('220 wire-sink\r\n');
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end < 0) return;
          current.data = buffer.subarray(0, end + 2);
          transactions.push(current);
          current = { commands: [], data: Buffer.alloc(0) };
          buffer = buffer.subarray(end + 5);
          inData = false;
          socket.write('250 kept\r\n');
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol < 0) return;
        const line = buffer.subarray(0, eol).toString('latin1');
        buffer = buffer.subarray(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'MAIL' || verb === 'RCPT') current.commands.push(line);
        if (verb === 'DATA') {
          inData = true;
          socket.write('354 go on\r\n');
        } else if (verb === 'QUIT') socket.end('221 bye\r\n');
        else socket.write('250 ok\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    transactions,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Lines of `data` that are not ended by CRLF, or that hold a lone CR: none may exist on the wire. */
function badLineEnds(data: Buffer): number {
  const text = data.toString('latin1');
  return (text.match(/\r(?!\n)|(?<!\r)\n/g) ?? []).length;
}

const LOOK_ALIKES: Record<string, string> = {
  '<LF>.<LF>': '\n.\n',
  '<CR>.<CR>': '\r.\r',
  '<LF>.<CR><LF>': '\n.\r\n',
  '<CR><LF>.<LF>': '\r\n.\n',
  '<CR><LF>.<CR>': '\r\n.\r',
};

describe('SMTP smuggling: end-of-data look-alikes stay content, in and out', () => {
  let sink: Awaited<ReturnType<typeof startWireSink>>;
  let lacre: InProcessListener;
  let port = 0;

  before(async () => {
    sink = await startWireSink();
    lacre = await startInProcessListener(sink.port);
    port = lacre.port;
  });
  after(async () => {
    await lacre?.close();
    await sink?.close();
  });

  for (const [name, lookAlike] of Object.entries(LOOK_ALIKES)) {
    it(`${name} then commands: one message, one reply, the commands reinjected as escaped content`, async () => {
      sink.transactions.length = 0;
      const { client } = await RawSmtpClient.connect(port);
      await client.command('EHLO attacker.example');
      assert.match(await client.command('MAIL FROM:<sender@example.net>'), /^250 /);
      assert.match(await client.command('RCPT TO:<plain@example.test>'), /^250 /);
      assert.match(await client.command('DATA'), /^354 /);
      const smuggled = 'MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nFrom: admin@example.test\r\n\r\nsmuggled\r\n';
      client.write(`From: sender@example.net\r\nSubject: look-alike\r\n\r\nbefore${lookAlike}${smuggled}`);
      client.write('\r\n.\r\n');
      assert.match(await client.reply(), /^250 /, 'one message, answered once');
      // Anything the listener took for commands would have been answered by now: NOOP's reply must come next. Its
      // exact text, as a smuggled MAIL's or RCPT's reply starts with "250 " too.
      const noop = await client.command('NOOP');
      assert.match(noop, /^250 /);
      assert.equal(noop, '250 OK', 'the reply after the message is NOOP\'s own');
      await client.close();

      assert.equal(sink.transactions.length, 1, 'one transaction reinjected');
      const [reinjected] = sink.transactions;
      assert.deepEqual(reinjected!.commands.map((line) => line.replace(/ .*/, '')), ['MAIL', 'RCPT']);
      assert.match(reinjected!.commands[1]!, /plain@example\.test/);
      const wire = reinjected!.data;
      assert.equal(badLineEnds(wire), 0, 'every bare CR and LF was made CRLF');
      assert.doesNotMatch(wire.toString('latin1'), /\r\n\.\r\n|\r\n\.[^.]/, 'every line-leading dot is doubled: no end of data inside');
      assert.ok(wire.includes('MAIL FROM:<admin@example.test>'), 'the smuggled commands are content of the one message');
    });
  }

  it('takes a command line over 16 KiB for an attack: 421 and the connection closed', async () => {
    const { client } = await RawSmtpClient.connect(port);
    client.write(`EHLO ${'a'.repeat(20_000)}`);
    assert.match(await client.reply(), /^421 /);
    await client.closed();
  });
});
