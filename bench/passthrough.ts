/**
 * Bench child: the ceiling. The same parts as `lacre serve` with its defaults (smtp-server in, a pooled
 * nodemailer transport out, the message sent as raw bytes with the envelope given) but no database, no key
 * lookup and no crypto. Answers 250 only after the relay accepted, as Lacre does.
 * Relay port from BENCH_RELAY_PORT; sends { ready: port } over IPC once listening.
 */
import nodemailer from 'nodemailer';
import { SMTPServer, type SMTPServerDataStream } from 'smtp-server';
import type { AddressInfo } from 'node:net';

const relayPort = Number(process.env.BENCH_RELAY_PORT);
if (!Number.isInteger(relayPort) || relayPort <= 0) throw new Error('BENCH_RELAY_PORT must name the relay port');

const relay = nodemailer.createTransport({
  pool: true,
  host: '127.0.0.1',
  port: relayPort,
  secure: false,
  ignoreTLS: true,
  maxConnections: 20,
  maxMessages: Infinity,
  connectionTimeout: 10_000,
  greetingTimeout: 10_000,
  socketTimeout: 120_000,
});

const server = new SMTPServer({
  banner: 'passthrough',
  size: 200 * 1024 * 1024,
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  useXForward: true,
  disableReverseLookup: true,
  maxClients: 200,
  socketTimeout: 300_000,
  logger: false,
  onData(stream, session, callback) {
    const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
    const to = session.envelope.rcptTo.map((rcpt) => rcpt.address);
    relay.sendMail({ envelope: { from, to }, raw: stream }).then(
      (info) => {
        const rejected = (info.rejected ?? []) as unknown[];
        if (rejected.length > 0) return callback(Object.assign(new Error('relay rejected'), { responseCode: 451 }));
        callback(null, 'relayed');
      },
      (error: unknown) => afterDrained(stream, () => callback(Object.assign(new Error(`relay: ${String(error)}`), { responseCode: 451 }))),
    );
  },
});

/** smtp-server needs the data stream read to its end before the reply. */
function afterDrained(stream: SMTPServerDataStream, reply: () => void): void {
  if (stream.readableEnded) return reply();
  stream.once('end', reply);
  stream.resume();
}

server.listen(0, '127.0.0.1', () => {
  process.send!({ ready: (server.server.address() as AddressInfo).port });
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
