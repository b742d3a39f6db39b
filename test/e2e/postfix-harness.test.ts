import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import { freePort } from '../helpers/ports.js';
import {
  postfixUnavailableReason,
  startPostfix,
  type PostfixInstance,
  type QueuedMessage,
} from '../helpers/postfix.js';

/**
 * A minimal pass-through filter: what Postfix hands it on the filter port goes back to the reinjection port with the
 * same envelope, and the 250 is given only after the reinjection listener accepted it.
 */
class PassThroughFilter {
  readonly xforwardSeen: string[] = [];
  connections = 0;
  private readonly server: SMTPServer;
  private readonly relay: ReturnType<typeof nodemailer.createTransport>;

  constructor(reinjectPort: number) {
    this.relay = nodemailer.createTransport({ host: '127.0.0.1', port: reinjectPort, secure: false, ignoreTLS: true });
    this.server = new SMTPServer({
      banner: 'pass-through test filter',
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      useXForward: true,
      logger: false,
      onConnect: (_session, callback) => {
        this.connections += 1;
        callback();
      },
      // Postfix keeps an idle connection cached for a few seconds; do not wait for it on close.
      closeTimeout: 200,
      onData: (stream, session, callback) => {
        this.relayMessage(stream, session).then(
          () => callback(),
          (error: unknown) => {
            stream.resume(); // the reply waits for the end of DATA, read or not
            callback(tempFailure(`relay failed: ${String(error)}`));
          },
        );
      },
    });
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
  }

  async close(): Promise<void> {
    this.relay.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async relayMessage(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<void> {
    const client = session.xForward.get('ADDR');
    if (typeof client === 'string') this.xforwardSeen.push(client);
    const { mailFrom, rcptTo, bodyType } = session.envelope;
    await this.relay.sendMail({
      envelope: {
        from: mailFrom ? mailFrom.address : '',
        to: rcptTo.map((recipient) => recipient.address),
        use8BitMime: bodyType === '8bitmime',
      } as { from: string; to: string[] },
      raw: stream,
    });
  }
}

function tempFailure(message: string): Error {
  return Object.assign(new Error(message), { responseCode: 451 });
}

/** Exercises what a careless relay changes: 8-bit text, leading dots, a "From " line, trailing spaces. */
function originalMessage(): Buffer {
  const lines = [
    'From: Sender <sender@example.org>',
    'To: Alice <alice@example.test>',
    'Subject: harness check',
    'Date: Tue, 24 Nov 2026 05:00:00 +0000',
    'Message-ID: <harness-check@example.org>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Grüße aus Köln — 8-bit text that must not be converted to quoted-printable.',
    '.a line that starts with a dot',
    '..two dots',
    'From the start of a line (no mbox quoting in a Maildir)',
    'trailing spaces   ',
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'utf8');
}

async function sendToPostfix(port: number, message: Buffer, to: string[]): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({
      envelope: { from: 'sender@example.org', to, use8BitMime: true } as { from: string; to: string[] },
      raw: message,
    });
  } finally {
    transport.close();
  }
}

const unavailable = postfixUnavailableReason();

describe('real Postfix harness with a pass-through content filter', { skip: unavailable }, () => {
  let postfix: PostfixInstance;
  let filter: PassThroughFilter;
  let filterPort: number;

  before(async () => {
    filterPort = await freePort();
    postfix = await startPostfix({ filterPort });
    filter = new PassThroughFilter(postfix.reinjectPort);
    await filter.listen(filterPort);
  });

  after(async () => {
    await filter?.close();
    await postfix?.stop();
  });

  it('delivers the message through the filter with its bytes unchanged', async () => {
    const message = originalMessage();
    await sendToPostfix(postfix.smtpPort, message, ['Alice@Example.TEST']);

    const [delivered] = await postfix.waitForDelivery('alice@example.test', 1, 20_000);
    assert.ok(delivered);
    const stored = await readFile(delivered);
    // Maildir files use LF; Postfix prepends Return-Path, Delivered-To and two Received headers.
    const expectedTail = Buffer.from(message.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');
    assert.ok(
      stored.subarray(stored.length - expectedTail.length).equals(expectedTail),
      `delivered file does not end with the original message:\n${stored.toString('utf8')}`,
    );
    const addedHeaders = stored.subarray(0, stored.length - expectedTail.length).toString('utf8');
    assert.match(addedHeaders, /^Return-Path: <sender@example\.org>\n/);
    // The local part keeps the case it was sent with; only the domain is folded.
    assert.match(addedHeaders, /^Delivered-To: Alice@example\.test$/m);
    assert.equal(addedHeaders.match(/^Received: /gm)?.length, 2, 'one Received per smtpd pass (inbound, reinjection)');
    assert.deepEqual(filter.xforwardSeen, ['127.0.0.1'], 'Postfix forwards the client address with XFORWARD');
    assert.deepEqual(await postfix.queue(), []);
    assert.match(await postfix.log(), /relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent/);
  });

  it('reuses its connection to the filter for consecutive messages', async () => {
    const before = filter.connections;
    for (let count = 1; count <= 3; count += 1) {
      await sendToPostfix(postfix.smtpPort, originalMessage(), ['carol@example.test']);
      await postfix.waitForDelivery('carol@example.test', count, 20_000);
    }
    assert.ok(before >= 1, 'the first test opened a connection');
    assert.equal(filter.connections, before, `no new connection for three more messages\n${await postfix.log()}`);
  });

  it('keeps the message queued while the filter is down and delivers it after a flush', async () => {
    await filter.close();
    await sendToPostfix(postfix.smtpPort, originalMessage(), ['bob@example.test']);
    const deferred = await waitForQueue(postfix, (entries) => entries.some((entry) => entry.queue_name === 'deferred'));
    assert.equal(deferred.length, 1, `one message deferred, got ${JSON.stringify(deferred)}\n${await postfix.log()}`);
    assert.equal(deferred[0]?.recipients[0]?.address, 'bob@example.test');
    assert.deepEqual(await postfix.delivered('bob@example.test'), []);

    filter = new PassThroughFilter(postfix.reinjectPort);
    await filter.listen(filterPort);
    await postfix.flush();
    const files = await postfix.waitForDelivery('bob@example.test', 1, 20_000);
    assert.equal(files.length, 1);
    assert.deepEqual(await waitForQueue(postfix, (entries) => entries.length === 0), []);
  });
});

async function waitForQueue(
  postfix: PostfixInstance,
  done: (entries: QueuedMessage[]) => boolean,
  timeoutMs = 10_000,
): Promise<QueuedMessage[]> {
  const deadline = Date.now() + timeoutMs;
  let entries = await postfix.queue();
  while (!done(entries) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    entries = await postfix.queue();
  }
  return entries;
}
