import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { HttpError, LacreError } from '../../src/errors.js';
import { acceptJsonBodies, allowOnly, askForBody, closeHttpStack, createHttpStack, listenOn, type HttpApp } from '../../src/http/stack.js';
import { createLogger } from '../../src/log/logger.js';

/** A logger writing JSON lines into `lines`. */
function capturingLogger(lines: Record<string, unknown>[]) {
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  return createLogger('info', sink);
}

/** Sends a request whose body goes only after "100 Continue"; resolves to the status and whether it was asked for. */
function putExpectingContinue(base: string, path: string, body: string): Promise<{ status: number; continued: boolean; text: string }> {
  return new Promise((resolve, reject) => {
    let continued = false;
    const request = httpRequest(`${base}${path}`, { method: 'PUT', headers: { expect: '100-continue', 'content-length': String(body.length) } });
    request.setTimeout(5000, () => request.destroy(new Error('no answer within 5 s')));
    request.on('continue', () => {
      continued = true;
      request.end(body);
    });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, continued, text }));
    });
    request.on('error', reject);
    request.flushHeaders();
  });
}

describe('the HTTP stack', () => {
  const logs: Record<string, unknown>[] = [];
  let app: HttpApp;
  let base: string;

  before(async () => {
    app = createHttpStack({ logger: capturingLogger(logs), explain: true });
    app.get('/refused', async () => {
      throw new HttpError(409, 'taken', { 'X-Why': 'because' });
    });
    app.get('/broken', async () => {
      throw new Error('database said no');
    });
    app.get('/typed', { schema: { querystring: { type: 'object', properties: { n: { type: 'string', pattern: '^[0-9]+$' }, colour: { enum: ['red', 'blue'] } } } } }, async () => 'ok');
    // Reads the raw stream itself, after asking for it: the body is never read by the stack.
    app.put<{ Querystring: { refuse?: string } }>('/stream', async (request, reply) => {
      if (request.query.refuse !== undefined) throw new HttpError(507, 'full');
      askForBody(request, reply);
      let bytes = 0;
      for await (const chunk of request.raw) bytes += (chunk as Buffer).length;
      return reply.type('text/plain').send(`read ${bytes}`);
    });
    allowOnly(app, '/stream', ['PUT'], { explain: true });
    void app.register(async (scope) => {
      acceptJsonBodies(scope, 64, (error) => new HttpError(400, `not JSON: ${error.message}`));
      scope.put<{ Body: unknown }>('/json', async (request) => JSON.stringify(request.body));
    });
    base = `http://127.0.0.1:${(await listenOn(app, '127.0.0.1:0', 'test.listen')).port}`;
  });
  after(() => closeHttpStack(app, 0));

  it('writes a typed refusal as its status, headers and body', async () => {
    const answer = await fetch(`${base}/refused`);
    assert.equal(answer.status, 409);
    assert.equal(answer.headers.get('x-why'), 'because');
    assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(await answer.text(), 'taken');
    assert.ok(new HttpError(409) instanceof LacreError);
  });

  it('answers anything else 500 and logs one line with method and path, never the query or a header', async () => {
    logs.length = 0;
    const answer = await fetch(`${base}/broken?token=sesame`, { headers: { authorization: 'Token c2VjcmV0' } });
    assert.equal(answer.status, 500);
    assert.equal(await answer.text(), 'Internal Server Error');
    assert.equal(logs.length, 1);
    const [line] = logs;
    assert.equal(line!.msg, 'HTTP request failed');
    assert.deepEqual([line!.method, line!.path], ['GET', '/broken']);
    assert.match(JSON.stringify(line), /database said no/);
    assert.doesNotMatch(JSON.stringify(line), /sesame|c2VjcmV0|authorization/i);
  });

  it('logs the route pattern, not the path, on a listener whose paths hold secrets (the key service\u2019s tokens)', async () => {
    const secretLogs: Record<string, unknown>[] = [];
    const secretive = createHttpStack({ logger: capturingLogger(secretLogs), pathsHoldSecrets: true });
    secretive.post('/confirm/:token', async () => {
      throw new Error('database said no');
    });
    const port = (await listenOn(secretive, '127.0.0.1:0', 'test.listen')).port;
    try {
      assert.equal((await fetch(`http://127.0.0.1:${port}/confirm/sesame-token`, { method: 'POST' })).status, 500);
      assert.equal(secretLogs.length, 1);
      assert.equal(secretLogs[0]!.route, '/confirm/:token');
      assert.doesNotMatch(JSON.stringify(secretLogs), /sesame/);
    } finally {
      await closeHttpStack(secretive, 0);
    }
  });

  it('refuses what the schema does not allow with 400 naming the field, before the handler', async () => {
    assert.equal((await fetch(`${base}/typed?n=12&colour=red`)).status, 200);
    const bad = await fetch(`${base}/typed?n=1x`);
    assert.deepEqual([bad.status, await bad.text()], [400, 'invalid n']);
    const colour = await fetch(`${base}/typed?colour=green`);
    assert.deepEqual([colour.status, await colour.text()], [400, '"colour" must be one of red, blue']);
    assert.equal((await fetch(`${base}/typed?n=1&n=2`)).status, 400, 'a repeated parameter is not a string');
  });

  it('answers 404 naming the path, 405 with Allow, and 400 for a path that does not decode', async () => {
    const missing = await fetch(`${base}/nowhere?x=1`);
    assert.deepEqual([missing.status, await missing.text()], [404, 'no such endpoint: /nowhere']);
    const wrong = await fetch(`${base}/stream`, { method: 'DELETE' });
    assert.deepEqual([wrong.status, wrong.headers.get('allow'), await wrong.text()], [405, 'PUT', 'DELETE not allowed on /stream']);
    assert.equal((await fetch(`${base}/%zz`)).status, 400);
    assert.equal((await fetch(`${base}/refused`, { method: 'HEAD' })).status, 409, 'HEAD follows GET');
  });

  it('hands a body of any content type, or none, to the route unread', async () => {
    const body = Buffer.alloc(300_000, 7);
    for (const headers of [{}, { 'content-type': 'application/octet-stream' }, { 'content-type': 'application/json' }, { 'content-type': 'text/plain' }] as Record<string, string>[]) {
      const answer = await fetch(`${base}/stream`, { method: 'PUT', body, headers });
      assert.equal(await answer.text(), `read ${body.length}`, JSON.stringify(headers));
    }
  });

  it('leaves "100 Continue" to the route: a refusal goes out before the body, an accepted body is asked for', async () => {
    assert.deepEqual(await putExpectingContinue(base, '/stream?refuse', 'hello'), { status: 507, continued: false, text: 'full' });
    assert.deepEqual(await putExpectingContinue(base, '/stream', 'hello'), { status: 200, continued: true, text: 'read 5' });
    assert.deepEqual(await putExpectingContinue(base, '/json', '[1]'), { status: 200, continued: true, text: '[1]' });
  });

  it('reads JSON bodies whatever their content type in a scope that asks, up to its limit', async () => {
    const put = (body: string, type?: string) => fetch(`${base}/json`, { method: 'PUT', body, headers: type ? { 'content-type': type } : {} });
    for (const type of [undefined, 'application/x-www-form-urlencoded', 'application/json']) {
      const answer = await put('{"level":"debug"}', type);
      assert.deepEqual([answer.status, await answer.text()], [200, '{"level":"debug"}'], String(type));
    }
    const invalid = await put('{level');
    assert.equal(invalid.status, 400);
    assert.match(await invalid.text(), /^not JSON: \S/, 'the scope words the refusal');
    assert.equal((await put(JSON.stringify('x'.repeat(100)))).status, 413);
  });
});

describe('the HTTP stack around a listener', () => {
  it('applies the timeouts it is given, and Node’s defaults otherwise', async () => {
    const logger = createLogger('silent');
    const plain = createHttpStack({ logger });
    const box = createHttpStack({ logger, timeouts: { requestMs: 0, idleMs: 120_000 } });
    try {
      assert.deepEqual([plain.server.requestTimeout, plain.server.headersTimeout, plain.server.keepAliveTimeout, plain.server.timeout], [300_000, 60_000, 5_000, 0]);
      assert.deepEqual([box.server.requestTimeout, box.server.headersTimeout, box.server.keepAliveTimeout, box.server.timeout], [0, 60_000, 5_000, 120_000]);
    } finally {
      await plain.close();
      await box.close();
    }
  });

  it('without explanations, 404 and 405 have empty bodies; without head routes, HEAD is refused like any method', async () => {
    const app = createHttpStack({ logger: createLogger('silent'), headRoutes: false });
    app.get('/thing', async () => 'thing');
    allowOnly(app, '/thing', ['GET']);
    const base = `http://127.0.0.1:${(await listenOn(app, '127.0.0.1:0', 'test.listen')).port}`;
    try {
      const missing = await fetch(`${base}/other`);
      assert.deepEqual([missing.status, await missing.text()], [404, '']);
      const head = await fetch(`${base}/thing`, { method: 'HEAD' });
      assert.deepEqual([head.status, head.headers.get('allow')], [405, 'GET']);
    } finally {
      await closeHttpStack(app, 0);
    }
  });

  it('names the setting when the address is taken', async () => {
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    const app = createHttpStack({ logger: createLogger('silent') });
    try {
      await assert.rejects(listenOn(app, `127.0.0.1:${port}`, 'http.listen'), (error: Error) => error instanceof LacreError && error.message.startsWith(`http.listen 127.0.0.1:${port}: `));
    } finally {
      await app.close();
      taken.close();
    }
  });

  it('closes a kept-alive idle connection at once, and one with a request in flight after the grace period', async () => {
    const app = createHttpStack({ logger: createLogger('silent') });
    let release: () => void = () => undefined;
    app.get('/quick', async () => 'quick');
    app.get('/slow', () => new Promise<string>((resolve) => (release = () => resolve('late'))));
    const base = `http://127.0.0.1:${(await listenOn(app, '127.0.0.1:0', 'test.listen')).port}`;
    assert.equal(await (await fetch(`${base}/quick`)).text(), 'quick');
    const slow = fetch(`${base}/slow`).then(
      (answer) => answer.status,
      (error: Error) => error,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    await closeHttpStack(app, 300);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 3000, `closed after ${elapsed} ms`);
    assert.ok((await slow) instanceof Error, 'the request still in flight was cut');
    release();
  });

  it('closes a kept-alive idle connection at once, without waiting for the grace period', async () => {
    const app = createHttpStack({ logger: createLogger('silent') });
    app.get('/quick', async () => 'quick');
    const base = `http://127.0.0.1:${(await listenOn(app, '127.0.0.1:0', 'test.listen')).port}`;
    assert.equal(await (await fetch(`${base}/quick`)).text(), 'quick');
    const started = Date.now();
    await closeHttpStack(app, 5000);
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 2000, `an idle kept-alive connection held the close for ${elapsed} ms`);
  });
});
