import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGpgHome, decrypt, generateKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { armoredBlock, contentEntity, corpus } from '../helpers/corpus.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';

describe('lacre serve in LMTP mode answers per recipient', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;
  let sink: SmtpSink;
  let server: LacreServer;
  let dataDir: string;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    bob = await generateKey(home, { email: 'bob@example.test' });
    // The relay refuses bob and erin for good and dave for now; everyone else is accepted.
    sink = await SmtpSink.start({
      rcptReply: (address) =>
        address === 'bob@example.test' || address === 'erin@example.test' ? { code: 550, message: '5.1.1 no such user' } : address === 'dave@example.test' ? { code: 451, message: '4.3.0 try later' } : undefined,
    });
    dataDir = await mkdtemp(join(tmpdir(), 'lacre-lmtp-'));
    const keyFile = join(dataDir, 'keys.asc');
    await writeFile(keyFile, alice.publicArmored + bob.publicArmored);
    const env = { LACRE_DATABASE_DATA_DIR: join(dataDir, 'db') };
    const imported = await runLacre(['keys', 'import', '--create', keyFile], env);
    assert.equal(imported.code, 0, imported.stderr);
    server = await LacreServer.start({ ...env, LACRE_SMTP_LMTP: 'true', LACRE_RELAY_PORT: String(sink.port) });
  });

  after(async () => {
    await server?.stop();
    await sink?.stop();
    await home?.remove();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('greets as LMTP and gives each recipient its own outcome', async () => {
    const message = corpus[0]!.raw;
    const to = ['alice@example.test', 'bob@example.test', 'carol@example.test', 'dave@example.test'];
    const reply = await sendRaw(server.port, { from: 'sender@example.net', to, lmtp: true }, message);
    assert.equal(reply.data.length, 4);
    assert.match(reply.data[0]!, /^250 /, 'alice: encrypted and accepted');
    assert.match(reply.data[1]!, /^554 5\.3\.0 /, 'bob: refused for good by the relay');
    assert.match(reply.data[2]!, /^250 /, 'carol: plain and accepted');
    assert.match(reply.data[3]!, /^451 4\.4\.1 /, 'dave: deferred by the relay, Postfix retries only him');
    assert.deepEqual(await decrypt(home, armoredBlock(sink.messageFor('alice@example.test')!.data)), contentEntity(message));
    const plain = sink.messageFor('carol@example.test')!;
    assert.deepEqual(plain.to, ['carol@example.test']);
    assert.deepEqual(plain.data, message);
  });

  it('a big message whose streamed copy is refused for good: its recipient is refused, the others deferred, not bounced', async () => {
    // Over 256 KiB the message streams, and erin's plain copy (she has no key) streams to the relay while it is
    // read: its refusal stops the message, and alice's copy is never sent. Alice must be retried, not bounced.
    const message = Buffer.concat([Buffer.from('From: s@example.net\r\nSubject: big\r\n\r\n'), Buffer.alloc(400 * 1024, 'line\r\n')]);
    const reply = await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'erin@example.test'], lmtp: true }, message);
    assert.equal(reply.data.length, 2);
    assert.match(reply.data[0]!, /^451 4\.3\.0 /, 'alice: nothing wrong with her copy, Postfix retries her');
    assert.match(reply.data[1]!, /^554 5\.3\.0 /, 'erin: refused for good by the relay');
  });
});
