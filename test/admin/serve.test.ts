/**
 * The done-criterion: `lacre keys` while `lacre serve` runs on the embedded database (which opens in one
 * process only) goes through the admin socket, and the very next message through serve follows the change, with
 * no restart: encrypted (real gpg decrypts it) after import, plain after disable, encrypted again after restore.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { armoredBlock, contentEntity, corpus } from '../helpers/corpus.js';
import { createGpgHome, decrypt, generateKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

describe('lacre keys while lacre serve runs on the embedded database', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let work: string;
  let keyFile: string;
  let socket: string;
  let sink: SmtpSink;
  let server: LacreServer | undefined;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    work = await mkdtemp(join(tmpdir(), 'lacre-admin-serve-'));
    keyFile = join(work, 'alice.asc');
    await writeFile(keyFile, alice.publicArmored);
    socket = join(work, 'run', 'admin.sock');
    sink = await SmtpSink.start();
    env = {
      LACRE_DATABASE_DATA_DIR: join(work, 'data'),
      LACRE_ADMIN_SOCKET: socket,
      LACRE_RELAY_PORT: String(sink.port),
      LACRE_HTTP_ENABLED: 'false',
      LACRE_LOG_LEVEL: 'info',
    };
  });
  after(async () => {
    if (server) assert.equal(await server.stop(), 0);
    await sink?.stop();
    await home?.remove();
    await rm(work, { recursive: true, force: true });
  });

  /** Sends one corpus message to alice through serve; the copy the relay got. */
  async function sendToAlice(): Promise<Buffer> {
    sink.messages.length = 0;
    const reply = await sendRaw(server!.port, { from: 'sender@example.net', to: ['alice@example.test'] }, corpus[0]!.raw);
    assert.match(reply.data[0]!, /^250 /);
    assert.equal(sink.messages.length, 1);
    return sink.messages[0]!.data;
  }

  async function assertEncryptedToAlice(copy: Buffer): Promise<void> {
    assert.match(copy.toString('latin1'), /-----BEGIN PGP MESSAGE-----/);
    assert.deepEqual(await decrypt(home, armoredBlock(copy)), contentEntity(corpus[0]!.raw));
  }

  async function keys(args: string[]): Promise<string> {
    const result = await runLacre(['keys', ...args], env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /using the running lacre serve \(admin socket .*admin\.sock\)/);
    return result.stdout.toString('utf8');
  }

  it('imports, disables and restores through the socket; the next message follows each change', async () => {
    server = await LacreServer.start(env);
    const ready = await server.waitForLog((line) => line.msg === 'lacre is ready');
    assert.equal(ready.admin, socket);
    assert.equal((await stat(socket)).mode & 0o777, 0o600);
    assert.deepEqual(await sendToAlice(), corpus[0]!.raw, 'no key yet: plain, byte for byte');

    assert.match(await keys(['import', keyFile]), new RegExp(`^imported ${alice.fingerprint} for alice@example.test`, 'm'));
    await assertEncryptedToAlice(await sendToAlice());
    assert.match(await keys(['list']), new RegExp(`^alice@example.test\\s+mime\\s+confirmed\\s+${alice.fingerprint}`, 'm'));

    assert.equal(await keys(['disable', 'alice@example.test']), 'disabled 1 key\n');
    assert.deepEqual(await sendToAlice(), corpus[0]!.raw, 'disabled: plain (on_unusable_key does not apply: no confirmed key)');

    assert.equal(await keys(['restore', alice.fingerprint]), `restored ${alice.fingerprint} for alice@example.test\n`);
    await assertEncryptedToAlice(await sendToAlice());
  });

  it('removes the socket at stop; then lacre keys opens the database itself', async () => {
    assert.equal(await server!.stop(), 0);
    server = undefined;
    await assert.rejects(stat(socket), { code: 'ENOENT' });
    const listed = await runLacre(['keys', 'list', '--json'], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stderr, /^using embedded database /m);
    assert.deepEqual((JSON.parse(listed.stdout.toString('utf8')) as { email: string; status: string }[]).map((row) => [row.email, row.status]), [
      ['alice@example.test', 'confirmed'],
    ]);
  });
});
