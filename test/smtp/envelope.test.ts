/**
 * The envelope as Lacre receives it and reinjects it: every accepted RCPT as spelled (case variants and duplicates),
 * international domains in the form they came in, the DATA deadline, and XFORWARD attributes per transaction.
 * In this process: a real listener (SMTP and LMTP), the embedded database, a real relay sink recording the exact
 * MAIL and RCPT lines it was sent.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger } from '../../src/log/logger.js';
import { KeyStore } from '../../src/keys/store.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createSmtpListener, type SmtpListener } from '../../src/smtp/listener.js';
import { createGpgHome, decrypt, generateKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { armoredBlock, contentEntity } from '../helpers/corpus.js';
import { RawSmtpClient, sendRaw } from '../helpers/smtp-client.js';
import { SmtpSink, type SunkMessage } from '../helpers/smtp-sink.js';

const MESSAGE = Buffer.from('From: s@example.net\r\nSubject: envelope\r\nMessage-ID: <envelope@example.net>\r\n\r\nhello\r\n');
const ENCRYPTED = /^Content-Type: multipart\/encrypted;/m;

/** The log lines a listener wrote, parsed. */
class LogLines extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    callback();
  }
}

async function eventually<T>(probe: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not seen within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function sunkTo(sink: SmtpSink, rcptLine: string): SunkMessage[] {
  return sink.messages.filter((message) => message.commands.includes(rcptLine));
}

describe('the envelope through the listener (embedded database, real relay sink)', () => {
  let dataDir: string;
  let home: GpgHome;
  let alice: GpgKey;
  let dave: GpgKey;
  let sink: SmtpSink;
  let runtime: Runtime;
  let config: Config;
  const logs = new LogLines();
  const refusals = () => logs.lines.filter((line) => line.msg === 'message not accepted');
  const listeners: SmtpListener[] = [];
  const ports = { smtp: 0, lmtp: 0, hasty: 0, hastyLmtp: 0, smallLmtp: 0 };

  async function listen(overrides: Record<string, string>): Promise<number> {
    const listenerConfig = loadConfig({ env: { ...baseEnv(), ...overrides } });
    const listener = createSmtpListener(listenerConfig, runtime.filter, createLogger('info', logs));
    listeners.push(listener);
    return (await listener.listen()).port;
  }
  const baseEnv = () => ({
    LACRE_DATABASE_DATA_DIR: join(dataDir, 'db'),
    LACRE_RELAY_PORT: String(sink.port),
    LACRE_SMTP_LISTEN: '127.0.0.1:0',
    LACRE_KEYS_LOCAL_PART_CASE_SENSITIVE: 'true',
  });

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lacre-envelope-'));
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    dave = await generateKey(home, { email: 'dave@xn--exmple-cua.org' });
    sink = await SmtpSink.start();
    config = loadConfig({ env: baseEnv() });
    runtime = await openRuntime(config, createLogger('silent'));
    const store = new KeyStore(runtime.db, config.keys);
    await store.importKey(alice.publicArmored);
    await store.importKey(dave.publicArmored);
    ports.smtp = await listen({});
    ports.lmtp = await listen({ LACRE_SMTP_LMTP: 'true' });
    ports.hasty = await listen({ LACRE_SMTP_DATA_TIMEOUT_SECONDS: '1' });
    ports.hastyLmtp = await listen({ LACRE_SMTP_DATA_TIMEOUT_SECONDS: '1', LACRE_SMTP_LMTP: 'true' });
    ports.smallLmtp = await listen({ LACRE_SMTP_MAX_SIZE: '4KiB', LACRE_SMTP_MAX_HEADER_SIZE: '2KiB', LACRE_SMTP_LMTP: 'true' });
  });
  after(async () => {
    for (const listener of listeners) await listener.close();
    await runtime?.close();
    await sink?.stop();
    await home?.remove();
    await rm(dataDir, { recursive: true, force: true });
  });

  describe('recipients that differ only in case, and repeated ones', () => {
    it('SMTP: ALICE@ and alice@ (case-sensitive local parts: two mailboxes) both reach the relay, each as spelled', async () => {
      sink.messages.length = 0;
      const reply = await sendRaw(ports.smtp, { from: 's@example.net', to: ['ALICE@example.test', 'alice@example.test'] }, MESSAGE);
      assert.deepEqual(reply.rcpt.map((r) => r.slice(0, 3)), ['250', '250']);
      assert.match(reply.data[0]!, /^250 /);
      const [plain] = sunkTo(sink, 'RCPT TO:<ALICE@example.test>');
      assert.ok(plain, `ALICE@ was reinjected: ${JSON.stringify(sink.messages.map((m) => m.commands))}`);
      assert.deepEqual(plain.data, MESSAGE, 'ALICE@ has no key: the original bytes');
      const [encrypted] = sunkTo(sink, 'RCPT TO:<alice@example.test>');
      assert.ok(encrypted, 'alice@ was reinjected');
      assert.match(encrypted.data.toString('latin1'), ENCRYPTED);
      assert.deepEqual(await decrypt(home, armoredBlock(encrypted.data)), contentEntity(MESSAGE));
    });

    it('LMTP: four RCPTs, three of them case variants, get four replies after DATA and four envelope entries', async () => {
      sink.messages.length = 0;
      const to = ['ALICE@example.test', 'alice@example.test', 'Alice@example.test', 'bob@example.test'];
      const reply = await sendRaw(ports.lmtp, { from: 's@example.net', to, lmtp: true }, MESSAGE);
      assert.equal(reply.data.length, 4, JSON.stringify(reply.data));
      for (const line of reply.data) assert.match(line, /^250 /);
      const rcptLines = sink.messages.flatMap((message) => message.commands.filter((line) => line.startsWith('RCPT')));
      assert.deepEqual(rcptLines.sort(), to.map((address) => `RCPT TO:<${address}>`).sort());
    });

    it('LMTP: the same spelling twice is one mailbox, delivered once, and each RCPT still gets its reply', async () => {
      sink.messages.length = 0;
      const to = ['carol@example.test', 'alice@example.test', 'carol@example.test'];
      const reply = await sendRaw(ports.lmtp, { from: 's@example.net', to, lmtp: true }, MESSAGE);
      assert.equal(reply.data.length, 3, JSON.stringify(reply.data));
      for (const line of reply.data) assert.match(line, /^250 /);
      const rcptLines = sink.messages.flatMap((message) => message.commands.filter((line) => line.startsWith('RCPT')));
      assert.deepEqual(rcptLines.sort(), ['RCPT TO:<alice@example.test>', 'RCPT TO:<carol@example.test>']);
    });

    it('LMTP: a message over smtp.max_size gets one 552 per accepted RCPT, case variants included, and no more', async () => {
      // Lacre answers it (smtp-server's rejectOversized is off); were smtp-server to, it would answer once per entry of
      // session.envelope.rcptTo, which the listener puts back to every accepted RCPT.
      sink.messages.length = 0;
      const to = ['ALICE@example.test', 'alice@example.test', 'Alice@example.test', 'bob@example.test'];
      const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(8 * 1024, 'x\r\n')]);
      const { client } = await RawSmtpClient.connect(ports.smallLmtp);
      try {
        await client.command('LHLO test.example');
        assert.match(await client.command('MAIL FROM:<s@example.net>'), /^250 /);
        for (const address of to) assert.match(await client.command(`RCPT TO:<${address}>`), /^250 /);
        const { start } = await client.data(big, 0);
        assert.match(start, /^354 /);
        const replies: string[] = [];
        for (const _ of to) replies.push(await client.reply(5_000));
        for (const reply of replies) assert.match(reply, /^552 /, JSON.stringify(replies));
        assert.match(await client.command('NOOP'), /^250 /, 'no fifth reply to the DATA');
      } finally {
        await client.close();
      }
      assert.deepEqual(sink.messages, []);
    });
  });

  describe('subaddresses', () => {
    it('alice+tag@ is encrypted to alice@’s key and reinjected as alice+tag@', async () => {
      sink.messages.length = 0;
      const reply = await sendRaw(ports.smtp, { from: 's@example.net', to: ['alice+tag@example.test'] }, MESSAGE);
      assert.match(reply.data[0]!, /^250 /);
      const [copy] = sink.messages;
      assert.ok(copy);
      assert.deepEqual(copy.commands.slice(1), ['RCPT TO:<alice+tag@example.test>']);
      assert.match(copy.data.toString('latin1'), ENCRYPTED);
      assert.deepEqual(await decrypt(home, armoredBlock(copy.data)), contentEntity(MESSAGE));
    });
  });

  describe('international domains', () => {
    it('an ASCII (punycode) envelope is looked up by its A-label and reinjected as the same ASCII bytes, without SMTPUTF8', async () => {
      sink.messages.length = 0;
      const reply = await sendRaw(ports.smtp, { from: 's@xn--bcher-kva.example', to: ['dave@xn--exmple-cua.org'] }, MESSAGE);
      assert.match(reply.data[0]!, /^250 /);
      const [copy] = sink.messages;
      assert.ok(copy);
      assert.deepEqual(copy.commands, ['MAIL FROM:<s@xn--bcher-kva.example> BODY=8BITMIME', 'RCPT TO:<dave@xn--exmple-cua.org>']);
      assert.match(copy.data.toString('latin1'), ENCRYPTED, 'the key stored for dave@xn--exmple-cua.org was used');
      assert.deepEqual(await decrypt(home, armoredBlock(copy.data)), contentEntity(MESSAGE));
    });

    it('a UTF-8 envelope sent with SMTPUTF8 finds the same key and is reinjected in UTF-8 with SMTPUTF8', async () => {
      sink.messages.length = 0;
      const { client } = await RawSmtpClient.connect(ports.smtp);
      await client.command('EHLO test.example');
      assert.match(await client.command('MAIL FROM:<s@bücher.example> SMTPUTF8'), /^250 /);
      assert.match(await client.command('RCPT TO:<dave@exämple.org>'), /^250 /);
      const { final } = await client.data(MESSAGE);
      await client.close();
      assert.match(final[0]!, /^250 /);
      const [copy] = sink.messages;
      assert.ok(copy);
      assert.deepEqual(copy.commands, ['MAIL FROM:<s@bücher.example> SMTPUTF8', 'RCPT TO:<dave@exämple.org>']);
      assert.match(copy.data.toString('latin1'), ENCRYPTED);
    });
  });

  describe('smtp.data_timeout_seconds', () => {
    for (const mode of ['SMTP', 'LMTP'] as const) {
      for (const recipient of ['carol@example.test', 'alice@example.test']) {
        it(`${mode}: a client trickling its message past the deadline gets 421 4.4.2, the connection closes, nothing is delivered (${recipient})`, async () => {
          sink.messages.length = 0;
          const refusedBefore = refusals().length;
          const port = mode === 'SMTP' ? ports.hasty : ports.hastyLmtp;
          const { client } = await RawSmtpClient.connect(port);
          await client.command(`${mode === 'SMTP' ? 'EHLO' : 'LHLO'} test.example`);
          await client.command('MAIL FROM:<s@example.net>');
          assert.match(await client.command(`RCPT TO:<${recipient}>`), /^250 /);
          assert.match(await client.command('DATA'), /^354 /);
          client.write('From: s@example.net\r\nSubject: slow\r\n\r\n');
          const trickle = setInterval(() => client.write('x'), 100);
          try {
            const reply = await client.reply(5_000);
            assert.match(reply, /^421 4\.4\.2 /);
            await client.closed(5_000);
          } finally {
            clearInterval(trickle);
          }
          const line = await eventually(() => refusals()[refusedBefore]);
          assert.match(String(line.reply), /^421 4\.4\.2 /, 'a log line says the message was not accepted, and why');
          assert.equal(line.recipients && (line.recipients as Array<{ to: string }>)[0]?.to, recipient);
          // Whatever was streamed to the relay was withdrawn before its final dot.
          await new Promise((resolve) => setTimeout(resolve, 300));
          assert.deepEqual(sink.messages, []);
        });
      }
    }
  });

  describe('XFORWARD', () => {
    it('attributes hold for the next transaction only; without IDENT the queue id is read from Postfix’s Received line', async () => {
      const { client } = await RawSmtpClient.connect(ports.smtp);
      await client.command('EHLO mx.example.test');
      // What Postfix sends for mail that came in over SMTP, then for a locally submitted one on the same connection.
      assert.match(await client.command('XFORWARD NAME=client.example.net ADDR=192.0.2.7 PORT=52772'), /^250 /);
      assert.match(await client.command('XFORWARD PROTO=ESMTP HELO=[127.0.0.1] IDENT=9A21720C16D SOURCE=LOCAL'), /^250 /);
      await client.command('MAIL FROM:<s@example.org>');
      await client.command('RCPT TO:<carol@example.test>');
      const smtpReceived = 'Received: from [127.0.0.1] (localhost [127.0.0.1])\r\n\tby mx.example.test (Postfix) with ESMTP id 9A21720C16D\r\n\tfor <carol@example.test>; Fri,  4 Dec 2026 16:51:49 +0000 (UTC)\r\n';
      assert.match((await client.data(Buffer.concat([Buffer.from(smtpReceived), MESSAGE]))).final[0]!, /^250 /);
      await client.command('RSET');
      assert.match(await client.command('XFORWARD SOURCE=LOCAL'), /^250 /);
      await client.command('MAIL FROM:<root@example.test>');
      await client.command('RCPT TO:<carol@example.test>');
      const localReceived = 'Received: by mx.example.test (Postfix, from userid 0)\r\n\tid CEF6720C16F; Fri,  4 Dec 2026 16:51:49 +0000 (UTC)\r\n';
      assert.match((await client.data(Buffer.concat([Buffer.from(localReceived), MESSAGE]))).final[0]!, /^250 /);
      await client.close();
      const accepted = logs.lines.filter((l) => l.msg === 'message accepted').slice(-2);
      assert.deepEqual(
        accepted.map((l) => [l.queueId, l.client]),
        [
          ['9A21720C16D', '192.0.2.7'],
          ['CEF6720C16F', '127.0.0.1'],
        ],
      );
    });
  });
});
