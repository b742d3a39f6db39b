/**
 * Who can reach what (docs/security.md): every TCP listener binds loopback unless configured otherwise, the key
 * service is off unless configured, the admin interface is a Unix socket (its mode: test/admin/server.test.ts),
 * and the HTTP stack every listener shares refuses oversized request heads.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { closeHttpStack, createHttpStack, listenOn } from '../../src/http/stack.js';
import { findPackageRoot } from '../../src/util/package-root.js';
import { parseHostPort } from '../../src/util/host-port.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

describe('listeners bind loopback unless configured', () => {
  const defaults = loadConfig({ env: {} });

  for (const [name, listen] of [
    ['SMTP/LMTP filter (smtp.listen)', defaults.smtp.listen],
    ["operators' HTTP (http.listen)", defaults.http.listen],
    ['Incoming Box (incoming_box.listen)', defaults.incoming_box.listen],
  ] as const) {
    it(`${name} defaults to loopback`, () => {
      assert.ok(LOOPBACK.has(parseHostPort(listen).host), listen);
    });
  }

  it('the SMTP listener talks only to loopback peers by default (smtp.allowed_clients)', () => {
    assert.deepEqual(defaults.smtp.allowed_clients, ['127.0.0.1', '::1']);
  });

  it('the Incoming Box is not served, and the key service (web.listen) not started, unless configured', () => {
    assert.equal(defaults.incoming_box.serve, false);
    assert.equal(defaults.web.listen, undefined);
    assert.equal(defaults.web.wks_submission_address, undefined);
    assert.deepEqual(defaults.incoming_box.trusted_tokens, [], 'no Trusted Application is let in unless named');
  });

  it('the admin interface is a Unix socket path, never a TCP address', () => {
    assert.equal(defaults.admin.socket, './data/admin.sock');
    assert.doesNotMatch(defaults.admin.socket, /^[^/]*:\d+$/);
  });

  it('deploy/lacre.example.toml keeps every listener on loopback', () => {
    const example = parse(readFileSync(join(findPackageRoot(), 'deploy', 'lacre.example.toml'), 'utf8')) as Record<string, Record<string, unknown>>;
    for (const section of ['smtp', 'http', 'incoming_box']) {
      const listen = example[section]?.listen;
      assert.equal(typeof listen, 'string', `${section}.listen is in the example`);
      assert.ok(LOOPBACK.has(parseHostPort(listen as string).host), `${section}.listen = ${String(listen)}`);
    }
    assert.deepEqual(example.smtp?.allowed_clients, ['127.0.0.1', '::1']);
  });
});

describe('request size limits of the HTTP stack', () => {
  it('answers a request head over 16 KiB with 431, before any route runs', async () => {
    const app = createHttpStack({ logger: createLogger('silent') });
    let reached = false;
    app.get('/', async () => {
      reached = true;
      return 'ok';
    });
    const { port } = await listenOn(app, '127.0.0.1:0', 'test.listen');
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const sent = request({ host: '127.0.0.1', port, path: '/', headers: { 'x-big': 'h'.repeat(20 * 1024) } }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        });
        sent.on('error', reject);
        sent.end();
      });
      assert.equal(status, 431);
      assert.equal(reached, false);
    } finally {
      await closeHttpStack(app, 0);
    }
  });
});
