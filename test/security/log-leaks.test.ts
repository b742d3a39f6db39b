/**
 * DESIGN rule 5 at every level: `lacre serve` at trace (or at LACRE_LOG_LEVEL when the run sets one) with the
 * SMTP listener, the Incoming Box inside it, and the operators' HTTP listener, given mail whose subject and body
 * are leak markers to a keyed, a plain and a box recipient, refused mail, and box requests with right and
 * wrong tokens: no line it writes holds a subject, a body or a secret. LacreServer.stop checks every line too.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IncomingBoxClient } from '../../src/box-client/client.js';
import { createGpgHome, generateKey, type GpgHome } from '../helpers/gpg.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { LEAK_MARKERS, leakedMarkers, markSecret } from '../helpers/leak-markers.js';
import { freePort } from '../helpers/ports.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

const TRUSTED = `lacre-mx:${LEAK_MARKERS.token}`;

function message(id: string, headerPadding = 0, bodyPadding = 0): Buffer {
  return Buffer.from(
    `From: s@example.net\r\nTo: x@example.test\r\nSubject: ${LEAK_MARKERS.subject} ${id}\r\nMessage-ID: <${id}@example.net>\r\n` +
      (headerPadding > 0 ? `X-Padding: ${'p'.repeat(headerPadding)}\r\n` : '') +
      `\r\n${LEAK_MARKERS.body} ${id}\r\n${`${'b'.repeat(76)}\r\n`.repeat(Math.ceil(bodyPadding / 78))}`,
  );
}

describe('no subject, body or secret in any log line (lacre serve at trace, box inside)', () => {
  let home: GpgHome;
  let dir: string;
  let sink: SmtpSink;
  let server: LacreServer;
  let boxUrl: string;
  let bob: { id: string; token: string };

  before(async () => {
    home = await createGpgHome();
    const alice = await generateKey(home, { email: 'alice@example.test' });
    dir = await mkdtemp(join(tmpdir(), 'lacre-leaks-'));
    const env = { LACRE_DATABASE_DATA_DIR: join(dir, 'db') };
    await writeFile(join(dir, 'alice.asc'), alice.publicArmored);
    assert.equal((await runLacre(['keys', 'import', '--create', join(dir, 'alice.asc')], env)).code, 0);
    const bobKey = await generateKey(home, { email: 'bob@example.test' });
    await writeFile(join(dir, 'bob.asc'), bobKey.publicArmored);
    assert.equal((await runLacre(['keys', 'import', join(dir, 'bob.asc')], env)).code, 0);
    const id = (await runLacre(['inbox', 'user', 'add', 'bob@example.test'], env)).stdout.toString().trim();
    const token = (await runLacre(['inbox', 'token', 'create', id], env)).stdout.toString().trim();
    markSecret(token);
    bob = { id, token };
    sink = await SmtpSink.start();
    const boxPort = await freePort();
    boxUrl = `http://127.0.0.1:${boxPort}`;
    server = await LacreServer.start({
      ...env,
      LACRE_LOG_LEVEL: process.env.LACRE_LOG_LEVEL ?? 'trace',
      LACRE_RELAY_PORT: String(sink.port),
      LACRE_SMTP_MAX_HEADER_SIZE: '8KiB',
      LACRE_SMTP_MAX_SIZE: '64KiB',
      LACRE_INCOMING_BOX_SERVE: 'true',
      LACRE_INCOMING_BOX_LISTEN: `127.0.0.1:${boxPort}`,
      LACRE_INCOMING_BOX_BLOBS_PATH: join(dir, 'blobs'),
      LACRE_INCOMING_BOX_TRUSTED_TOKENS: TRUSTED,
      LACRE_INCOMING_BOX_URL: boxUrl,
      LACRE_INCOMING_BOX_TOKEN: TRUSTED,
    });
  });

  after(async () => {
    await server?.stop();
    await sink?.stop();
    await home?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  it('delivers, refuses and serves the box without a marker in any line, at trace', async () => {
    const envelope = { from: 'sender@example.net', to: ['alice@example.test', 'bob@example.test', 'carol@example.test'], xforward: 'IDENT=LEAKQ1' };
    assert.match((await sendRaw(server.port, envelope, message('accepted'))).data[0]!, /^250 /);
    assert.match((await sendRaw(server.port, envelope, message('big-header', 9000))).data[0]!, /^554 5\.3\.4/);
    assert.match((await sendRaw(server.port, envelope, message('too-large', 0, 70_000))).data[0]!, /^552 /);
    const client = new IncomingBoxClient({ url: boxUrl, user: bob.id, token: bob.token });
    const [blob] = (await client.list()) as string[];
    assert.ok(blob, 'the box copy arrived');
    await client.fetch(blob);
    const wrong = await fetch(`${boxUrl}/blobs/${bob.id}/`, { headers: { authorization: `Token ${Buffer.from(`${bob.id}:${LEAK_MARKERS.token}`).toString('base64')}` } });
    assert.equal(wrong.status, 401);
    const asUser = await fetch(`${boxUrl}/incoming/${bob.id}/x`, { method: 'PUT', body: LEAK_MARKERS.body, headers: { authorization: `Token ${Buffer.from(`${bob.id}:${bob.token}`).toString('base64')}` } });
    assert.equal(asUser.status, 401);
    assert.equal((await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).status, 200);
    await server.waitForLog((line) => line.messageId === '<accepted@example.net>');
    // Lacre writes nothing at trace today: debug is its most talkative level, and it must have spoken.
    if (process.env.LACRE_LOG_LEVEL === undefined) assert.ok(server.logs.some((line) => line.level === 'debug'), 'debug lines were written');
    assert.deepEqual(leakedMarkers(JSON.stringify(server.logs)), []);
  });
});
