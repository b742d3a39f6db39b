import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createSmtpListener } from '../../src/smtp/listener.js';
import { allowedClients } from '../../src/util/allowed-clients.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import type { LogLine } from '../helpers/lacre.js';

/** An IPv4 address of this machine that is not loopback, if it has one. */
const outsideAddress = Object.values(networkInterfaces())
  .flat()
  .find((nic) => nic !== undefined && !nic.internal && nic.family === 'IPv4')?.address;

describe('smtp.allowed_clients', () => {
  let dataDir: string;
  let runtime: Runtime;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lacre-allowed-'));
    runtime = await openRuntime(loadConfig({ env: { LACRE_DATABASE_DATA_DIR: dataDir } }), createLogger('silent'));
  });
  after(async () => {
    await runtime?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  /** Greets one client of a listener on `listen` with `allowed` (unset = the default), returning the greeting and the log. */
  async function greet(listen: string, allowed: string | undefined): Promise<{ greeting: string; logs: LogLine[] }> {
    const env: NodeJS.ProcessEnv = { LACRE_SMTP_LISTEN: listen, ...(allowed === undefined ? {} : { LACRE_SMTP_ALLOWED_CLIENTS: allowed }) };
    const output = new PassThrough();
    const logs: LogLine[] = [];
    output.setEncoding('utf8').on('data', (line: string) => logs.push(...line.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine)));
    const listener = createSmtpListener(loadConfig({ env }), runtime.filter, createLogger('trace', output));
    const { address, port } = await listener.listen();
    try {
      const { client, greeting } = await RawSmtpClient.connect(port, address);
      if (greeting.startsWith('554')) await client.closed();
      else await client.close();
      return { greeting, logs };
    } finally {
      await listener.close();
    }
  }

  it('defaults to loopback only', () => {
    assert.deepEqual(loadConfig({ env: {} }).smtp.allowed_clients, ['127.0.0.1', '::1']);
  });

  it('greets a loopback client by default', async () => {
    const { greeting } = await greet('127.0.0.1:0', undefined);
    assert.match(greeting, /^220 /);
  });

  it('refuses a peer outside the list with 554 5.7.1 at connect and one log line without content (list excluding 127.0.0.1)', async () => {
    const { greeting, logs } = await greet('127.0.0.1:0', '10.0.0.0/8,::1');
    assert.match(greeting, /^554 5\.7\.1 /);
    const refusals = logs.filter((line) => line.msg.startsWith('connection refused'));
    assert.equal(refusals.length, 1, JSON.stringify(logs));
    const known = new Set(['client', 'level', 'msg', 'service', 'session', 'time']);
    assert.deepEqual(Object.keys(refusals[0]!).filter((key) => !known.has(key)), [], 'only who and when, no content');
    assert.equal(refusals[0]!.client, '127.0.0.1');
  });

  it('refuses a non-loopback client by default, and greets it once its network is listed', { skip: outsideAddress === undefined && 'this machine has no non-loopback IPv4 address' }, async () => {
    const refused = await greet(`${outsideAddress}:0`, undefined);
    assert.match(refused.greeting, /^554 5\.7\.1 /);
    assert.ok(refused.logs.some((line) => line.msg.startsWith('connection refused') && line.client === outsideAddress));
    const listed = await greet(`${outsideAddress}:0`, `127.0.0.1,${outsideAddress}/32`);
    assert.match(listed.greeting, /^220 /);
  });

  it('matches addresses, CIDRs and IPv4-mapped IPv6 peers; refuses a bad entry in the configuration', () => {
    const allowed = allowedClients(['127.0.0.1', '10.0.0.0/8', 'fd00::/64']);
    for (const peer of ['127.0.0.1', '::ffff:127.0.0.1', '10.200.1.1', 'fd00::5']) assert.equal(allowed(peer), true, peer);
    for (const peer of ['127.0.0.2', '11.0.0.1', 'fd01::5', '::1', undefined, 'not-an-ip']) assert.equal(allowed(peer), false, String(peer));
    for (const bad of ['10.0.0.0/33', 'localhost', '10.0.0.0/8/1', '10.0.0.0/x']) {
      assert.throws(() => loadConfig({ env: { LACRE_SMTP_ALLOWED_CLIENTS: bad } }), /allowed_clients[\s\S]*IP address/, bad);
    }
  });
});
