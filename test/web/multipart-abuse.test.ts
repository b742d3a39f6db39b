/**
 * Hostile multipart bodies against the page's upload form on the real listener (startWebServer), over raw TCP so
 * that a body can be malformed, oversized or left unfinished. Each must get a defined refusal within a few seconds,
 * leave the server answering, and log no error: @fastify/busboy 3.2.6 falls silent when a skipped last part
 * outgrows its buffer (GHSA-5mv5-vr5f-hmvr), reads uncounted preambles and epilogues, and throws untyped parse
 * errors. One database backend: none of this reaches the database.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log/logger.js';
import { databaseBackends, openTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { startPageServer, type PageServer } from './page-fixture.js';

const BOUNDARY = 'lacreTestBoundary';
const CLOSING = Buffer.from(`--${BOUNDARY}--\r\n`);
/** Long enough that a hang fails the test, not the suite. */
const CLIENT_TIMEOUT_MS = 5_000;
const NEARLY_64_KIB = 'k'.repeat(60 * 1024);
const INVALID_FORM = 'The form was not filled in as expected. Please go back and try again.';
const TOO_LARGE = 'That is too large: a public key upload may be at most 64 KiB.';
const NO_KEY = 'Paste your public key or choose a key file.';

function formPart(name: string, value: string, filename?: string): Buffer {
  const disposition = `Content-Disposition: form-data; name="${name}"${filename === undefined ? '' : `; filename="${filename}"`}`;
  return Buffer.from(`--${BOUNDARY}\r\n${disposition}\r\n\r\n${value}\r\n`);
}

/** A part busboy skips: not form-data, or no Content-Disposition at all. */
function skippedPart(header: string, value: string): Buffer {
  return Buffer.from(`--${BOUNDARY}\r\n${header}\r\n\r\n${value}\r\n`);
}

interface Exchange {
  /** The status line's code, or undefined when the server answered nothing. */
  status?: number;
  /** The error page's message. */
  message?: string;
  /** Whether the server closed the connection (else the client gave up at CLIENT_TIMEOUT_MS). */
  closed: boolean;
  ms: number;
}

interface Sending {
  /** Content-Length to declare; by default the body's length. */
  declared?: number;
  /** Send only this much of the body, then wait. */
  sendOnly?: number;
  /** Ask for the connection to close after the answer (default); false: keep-alive, the server must close it. */
  closeAfter?: boolean;
  headers?: Record<string, string>;
}

/** POST /upload over raw TCP; resolves when the server closes the connection or after CLIENT_TIMEOUT_MS. */
function postUpload(base: string, body: Buffer, sending: Sending = {}): Promise<Exchange> {
  const started = Date.now();
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let received = '';
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      const status = /^HTTP\/1\.1 (\d{3})/.exec(received)?.[1];
      const message = /<div class="error" role="alert">[\s\S]*?<p>([^<]*)<\/p>/.exec(received)?.[1]?.trim();
      resolve({ ...(status ? { status: Number(status) } : {}), ...(message ? { message } : {}), closed, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), CLIENT_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
    const headers: Record<string, string> = {
      host: `${hostname}:${port}`,
      'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
      'content-length': String(sending.declared ?? body.length),
      ...(sending.closeAfter === false ? {} : { connection: 'close' }),
      ...sending.headers,
    };
    const head = Object.entries(headers).filter(([, value]) => value !== '').map(([name, value]) => `${name}: ${value}\r\n`).join('');
    socket.write(`POST /upload?lang=en HTTP/1.1\r\n${head}\r\n`);
    socket.write(body.subarray(0, sending.sendOnly ?? body.length));
  });
}

/**
 * POST /upload with "Expect: 100-continue", the body held back until the server says "100 Continue" (as curl does
 * for a body over 1 KiB, for a second, and stricter clients for good). Resolves to the final status, or undefined
 * when no 100 came within CLIENT_TIMEOUT_MS.
 */
function postAfterContinue(base: string, contentType: string, body: Buffer): Promise<number | undefined> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let received = '';
    let continued = false;
    const timer = setTimeout(() => (socket.destroy(), resolve(undefined)), CLIENT_TIMEOUT_MS);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (!continued && /^HTTP\/1\.1 100 Continue\r\n\r\n/.test(received)) {
        continued = true;
        received = '';
        socket.write(body);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(continued ? Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1]) : undefined);
    });
    const head = { host: `${hostname}:${port}`, 'content-type': contentType, 'content-length': String(body.length), expect: '100-continue', connection: 'close' };
    socket.write(`POST /upload?lang=en HTTP/1.1\r\n${Object.entries(head).map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`);
  });
}

function assertRefused(exchange: Exchange, status: number, message: string | undefined): void {
  assert.ok(exchange.closed, `no answer within ${CLIENT_TIMEOUT_MS} ms (status ${exchange.status ?? 'none'})`);
  assert.equal(exchange.status, status);
  if (message !== undefined) assert.equal(exchange.message, message);
}

describe('hostile multipart uploads on the web listener', () => {
  let sink: SmtpSink;
  let database: TestDatabase;
  let server: PageServer;
  let quickTimeout: PageServer;
  const logLines: string[] = [];
  const logger = createLogger('info', new Writable({ write(line, _encoding, done) { logLines.push(String(line)); done(); } }) as never);

  before(async () => {
    const [backend] = await databaseBackends();
    sink = await SmtpSink.start();
    database = await openTestDatabase(backend!);
    server = await startPageServer(database.db, sink, {}, logger);
    quickTimeout = await startPageServer(database.db, sink, { LACRE_WEB_REQUEST_TIMEOUT_SECONDS: '1' }, logger);
  });
  after(async () => {
    await quickTimeout?.close();
    await server?.close();
    await database?.cleanup();
    await sink?.stop();
  });

  /** After each refusal: the server still answers, and nothing was logged as an error. */
  async function assertStillServing(target: PageServer = server): Promise<void> {
    const start = await fetch(`${target.base}/?lang=en`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
    assert.equal(start.status, 200);
    await start.arrayBuffer();
    assert.deepEqual(logLines.filter((line) => /"level":"(error|fatal)"/.test(line)), []);
  }

  it('(a) refuses a second file with 413, the extra one last and large, with or without the closing boundary', async () => {
    const form = [formPart('lang', 'en'), formPart('keyfile', 'x', 'a.asc'), formPart('other', NEARLY_64_KIB, 'b.asc')];
    assertRefused(await postUpload(server.base, Buffer.concat([...form, CLOSING])), 413, TOO_LARGE);
    assertRefused(await postUpload(server.base, Buffer.concat(form)), 413, TOO_LARGE);
    await assertStillServing();
  });

  it('(b) refuses a field or part beyond the limits with 413, the skipped one last and large', async () => {
    const eightFields = Array.from({ length: 8 }, (_, index) => formPart(`field${index}`, 'v'));
    assertRefused(await postUpload(server.base, Buffer.concat([...eightFields, formPart('key', NEARLY_64_KIB), CLOSING])), 413, TOO_LARGE);
    const nineParts = [formPart('keyfile', 'x', 'a.asc'), ...eightFields];
    assertRefused(await postUpload(server.base, Buffer.concat([...nineParts, formPart('key', NEARLY_64_KIB), CLOSING])), 413, TOO_LARGE);
    assertRefused(await postUpload(server.base, Buffer.concat([...eightFields, formPart('f', 'v'), formPart('keyfile', NEARLY_64_KIB, 'a.asc'), CLOSING])), 413, TOO_LARGE);
    await assertStillServing();
  });

  it('(b) answers when busboy skips a large last part and falls silent (GHSA-5mv5-vr5f-hmvr)', async () => {
    for (const header of ['Content-Disposition: attachment', 'X-Not-A-Disposition: x']) {
      const exchange = await postUpload(server.base, Buffer.concat([formPart('lang', 'en'), skippedPart(header, NEARLY_64_KIB), CLOSING]));
      assertRefused(exchange, 400, INVALID_FORM);
    }
    // Under its buffer, the skipped part ends normally: the form simply has no key.
    assertRefused(await postUpload(server.base, Buffer.concat([formPart('lang', 'en'), skippedPart('Content-Disposition: attachment', 'small'), CLOSING])), 400, NO_KEY);
    await assertStillServing();
  });

  it('(c) refuses a malformed body with 400, the request ended normally', async () => {
    const lang = formPart('lang', 'en');
    const malformed: Record<string, Buffer> = {
      'no closing boundary': Buffer.concat([lang, formPart('key', 'hello')]),
      'a bad closing boundary': Buffer.concat([lang, formPart('key', 'hello'), Buffer.from(`--${BOUNDARY}-\r\n`)]),
      'no boundary at all': Buffer.from('just some text\r\n'.repeat(100)),
      'truncated in a part': Buffer.concat([lang, Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="key"\r\n\r\nhal`)]),
      'a header section without its blank line': Buffer.concat([lang, Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="key"\r\nX-Y: z`)]),
      'a header section past 60 KiB': Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="key"\r\nX: ${'h'.repeat(60_000)}`),
    };
    for (const [what, body] of Object.entries(malformed)) {
      const exchange = await postUpload(server.base, body);
      assert.ok(exchange.closed, `${what}: no answer`);
      assert.equal(exchange.status, 400, what);
      assert.equal(exchange.message, INVALID_FORM, what);
    }
    const noBoundaryParameter = await postUpload(server.base, Buffer.concat([lang, CLOSING]), { headers: { 'content-type': 'multipart/form-data' } });
    assertRefused(noBoundaryParameter, 400, INVALID_FORM);
    // A part whose header section the closing boundary cuts short is no part: the form has no key.
    assertRefused(await postUpload(server.base, Buffer.concat([lang, Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="key"\r\n`), CLOSING])), 400, NO_KEY);
    assertRefused(await postUpload(server.base, Buffer.alloc(0)), 400, NO_KEY);
    await assertStillServing();
  });

  it('(d) refuses more than 64 KiB of body with 413, whatever part of it busboy would not count', async () => {
    const lang = formPart('lang', 'en');
    const sevenFields = Array.from({ length: 7 }, (_, index) => formPart(`field${index}`, 'v'.repeat(10_000)));
    assertRefused(await postUpload(server.base, Buffer.concat([lang, ...sevenFields, CLOSING])), 413, TOO_LARGE);
    const preamble = Buffer.concat([Buffer.alloc(1024 * 1024, 'p'), Buffer.from('\r\n'), lang, formPart('key', 'hello'), CLOSING]);
    assertRefused(await postUpload(server.base, preamble), 413, TOO_LARGE);
    const epilogue = Buffer.concat([lang, formPart('key', 'hello'), CLOSING, Buffer.alloc(1024 * 1024, 'e')]);
    assertRefused(await postUpload(server.base, epilogue), 413, TOO_LARGE);
    await assertStillServing();
  });

  it('(d) refuses a declared or streamed body over 64 KiB within seconds and closes the connection, the client still sending', async () => {
    const start = Buffer.concat([formPart('lang', 'en'), formPart('key', 'hello')]);
    const declared = await postUpload(server.base, start, { declared: 10 * 1024 * 1024, closeAfter: false });
    assertRefused(declared, 413, TOO_LARGE);
    assert.ok(declared.ms < 3_000, `${declared.ms} ms`);
    const streamed = Buffer.concat([Buffer.alloc(100 * 1024, 'p'), start]);
    const refused = await postUpload(server.base, streamed, { declared: 10 * 1024 * 1024, sendOnly: 100 * 1024, closeAfter: false });
    assertRefused(refused, 413, TOO_LARGE);
    assert.ok(refused.ms < 2_000, `${refused.ms} ms`);
    await assertStillServing();
  });

  it('says "100 Continue" to a client that waits for it before sending its form, multipart or urlencoded', async () => {
    const multipart = Buffer.concat([formPart('lang', 'en'), formPart('key', 'not a key'), CLOSING]);
    assert.equal(await postAfterContinue(server.base, `multipart/form-data; boundary=${BOUNDARY}`, multipart), 400);
    assert.equal(await postAfterContinue(server.base, 'application/x-www-form-urlencoded', Buffer.from('lang=en&key=not+a+key')), 400);
    await assertStillServing();
  });

  it('(e) frees a connection whose client stalls mid-body after web.request_timeout_seconds, with 408', async () => {
    const body = Buffer.concat([formPart('lang', 'en'), formPart('key', NEARLY_64_KIB), CLOSING]);
    const stalled = await postUpload(quickTimeout.base, body, { sendOnly: body.length / 2, closeAfter: false });
    assertRefused(stalled, 408, undefined);
    assert.ok(stalled.ms >= 900, `${stalled.ms} ms`);
    await assertStillServing(quickTimeout);
  });
});
