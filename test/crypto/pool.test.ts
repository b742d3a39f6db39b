import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as openpgp from 'openpgp';
import { EncryptionPool, IN_THREAD_LIMIT } from '../../src/crypto/pool.js';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';

describe('encryption pool (worker threads)', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;
  let pool: EncryptionPool;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    bob = await generateKey(home, { email: 'bob@example.test', algo: 'rsa3072' });
    pool = new EncryptionPool(2, { inThreadLimit: 0, keyPacketsOnWorker: 'always' }); // every job to a worker
  });
  after(async () => {
    await pool.close();
    await home.remove();
  });

  it('encrypts in a worker: each copy names only its own keys and decrypts with gpg to the plaintext', async () => {
    const plaintext = Buffer.from('Content-Type: text/plain\r\n\r\nsecret\r\n\u0000binary');
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const bobKey = await openpgp.readKey({ armoredKey: bob.publicArmored });
    const jobs = Array.from({ length: 8 }, () => pool.encrypt({ plaintext, copies: [{ keys: [aliceKey] }, { keys: [bobKey] }], eol: '\r\n' }));
    for (const [forAlice, forBob] of await Promise.all(jobs)) {
      assert.deepEqual(await listPacketsKeyIds(home, Buffer.from(forAlice!)), [alice.encryptionKeyId]);
      assert.deepEqual(await listPacketsKeyIds(home, Buffer.from(forBob!)), [bob.encryptionKeyId]);
      assert.deepEqual(await decrypt(home, Buffer.from(forAlice!)), plaintext);
      assert.deepEqual(await decrypt(home, Buffer.from(forBob!)), plaintext);
    }
  });

  it('small plaintexts are encrypted in this thread, their key packets on a worker, for each key type node:crypto handles', async () => {
    const carol = await generateKey(home, { email: 'carol@example.test', algo: 'nistp256' });
    const recipients = [alice, bob, carol];
    const keys = await Promise.all(recipients.map((gpg) => openpgp.readKey({ armoredKey: gpg.publicArmored })));
    const lazy = new EncryptionPool(1, { keyPacketsOnWorker: 'always' });
    try {
      const small = Buffer.alloc(4096, 's');
      const copies = await lazy.encrypt({ plaintext: small, copies: keys.map((key) => ({ keys: [key] })), eol: '\n' });
      assert.equal(lazy.started, 1, 'one worker, for the key packets');
      for (const [i, copy] of copies.entries()) {
        assert.deepEqual(await listPacketsKeyIds(home, Buffer.from(copy)), [recipients[i]!.encryptionKeyId]);
        assert.deepEqual(await decrypt(home, Buffer.from(copy)), small);
      }
      const big = Buffer.alloc(IN_THREAD_LIMIT + 1, 'b');
      const [bigCopy] = await lazy.encrypt({ plaintext: big, copies: [{ keys: [keys[0]!] }], eol: '\n' });
      assert.equal(lazy.started, 1, 'a bigger one goes whole to the same worker');
      assert.deepEqual(await decrypt(home, Buffer.from(bigCopy!)), big);
    } finally {
      await lazy.close();
    }
  });

  it("small messages' key packets stay in this thread while the event loop is not busy", async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    let busy = false;
    const gauged = new EncryptionPool(1, { keyPacketsOnWorker: { isBusy: () => busy } });
    try {
      const plaintext = Buffer.from('small');
      const [idleCopy] = await gauged.encrypt({ plaintext, copies: [{ keys: [aliceKey] }], eol: '\n' });
      assert.equal(gauged.started, 0, 'idle: no worker');
      assert.deepEqual(await decrypt(home, Buffer.from(idleCopy!)), plaintext);
      busy = true;
      const [busyCopy] = await gauged.encrypt({ plaintext, copies: [{ keys: [aliceKey] }], eol: '\n' });
      assert.equal(gauged.started, 1, 'busy: key packets on a worker');
      assert.deepEqual(await decrypt(home, Buffer.from(busyCopy!)), plaintext);
    } finally {
      await gauged.close();
    }
  });

  it('with no workers (encryption.workers = 0) everything is written in this thread', async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const none = new EncryptionPool(0);
    try {
      const plaintext = Buffer.alloc(IN_THREAD_LIMIT + 1, 'n');
      const [copy] = await none.encrypt({ plaintext, copies: [{ keys: [aliceKey] }], eol: '\n' });
      assert.equal(none.started, 0);
      assert.deepEqual(await decrypt(home, Buffer.from(copy!)), plaintext);
    } finally {
      await none.close();
    }
  });

  it('key types left to openpgp.js (X448) get their key packets in this thread, next to ones written on the worker', async () => {
    const { privateKey, publicKey } = await openpgp.generateKey({ type: 'curve448', userIDs: [{ email: 'x448@example.test' }], format: 'object' });
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const plaintext = Buffer.from('for two keys');
    const keyPacketsOnWorker = new EncryptionPool(1, { keyPacketsOnWorker: 'always' });
    const [copy] = await keyPacketsOnWorker.encrypt({ plaintext, copies: [{ keys: [publicKey, aliceKey] }], eol: '\n' }).finally(() => keyPacketsOnWorker.close());
    assert.equal(keyPacketsOnWorker.started, 1);
    const message = await openpgp.readMessage({ armoredMessage: Buffer.from(copy!).toString('latin1') });
    const read = await openpgp.decrypt({ message, decryptionKeys: privateKey, format: 'binary' });
    assert.deepEqual(Buffer.from(read.data as Uint8Array), plaintext);
    assert.deepEqual(await decrypt(home, Buffer.from(copy!)), plaintext);
  });

  it('a message over the limit with a key type left to openpgp.js (X448) is encrypted whole in this thread', async () => {
    const { privateKey, publicKey } = await openpgp.generateKey({ type: 'curve448', userIDs: [{ email: 'x448-big@example.test' }], format: 'object' });
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const plaintext = Buffer.alloc(IN_THREAD_LIMIT + 1, 'x');
    const nativeOnly = new EncryptionPool(1, { keyPacketsOnWorker: 'never' });
    try {
      const [forAlice] = await nativeOnly.encrypt({ plaintext, copies: [{ keys: [aliceKey] }], eol: '\n' });
      assert.equal(nativeOnly.started, 1, 'native keys only: on the worker');
      assert.deepEqual(await decrypt(home, Buffer.from(forAlice!)), plaintext);
      const [forBoth] = await nativeOnly.encrypt({ plaintext, copies: [{ keys: [publicKey, aliceKey] }], eol: '\n' });
      const message = await openpgp.readMessage({ armoredMessage: Buffer.from(forBoth!).toString('latin1') });
      const read = await openpgp.decrypt({ message, decryptionKeys: privateKey, format: 'binary' });
      assert.deepEqual(Buffer.from(read.data as Uint8Array), plaintext);
      assert.deepEqual(await decrypt(home, Buffer.from(forBoth!)), plaintext);
    } finally {
      await nativeOnly.close();
    }
  });

  it('closing the pool fails the jobs still in flight rather than leaving them waiting', { timeout: 20_000 }, async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const closing = new EncryptionPool(1, { keyPacketsOnWorker: 'always' });
    const jobs = Array.from({ length: 20 }, (_, i) =>
      closing.encrypt({ plaintext: Buffer.alloc(i % 2 ? IN_THREAD_LIMIT + 1 : 100, 'c'), copies: [{ keys: [aliceKey] }], eol: '\n' }),
    );
    const settled = Promise.allSettled(jobs);
    await closing.close();
    const outcomes = await settled;
    const failures = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as Error] : []));
    assert.ok(failures.length > 0, 'jobs were still in flight');
    for (const failure of failures) assert.match(failure.message, /encryption pool (is )?closed/);
  });

  it('starts another worker only while every worker is busy, up to the pool size', async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const twoWorkers = new EncryptionPool(2);
    try {
      const big = Buffer.alloc(IN_THREAD_LIMIT + 1, 'b');
      const job = () => twoWorkers.encrypt({ plaintext: big, copies: [{ keys: [aliceKey] }], eol: '\n' });
      await job();
      await job();
      assert.equal(twoWorkers.started, 1, 'one after the other: the first worker was idle again');
      await Promise.all([job(), job(), job(), job()]);
      assert.equal(twoWorkers.started, 2, 'at once: a second worker, and no more than the size');
    } finally {
      await twoWorkers.close();
    }
  });

  it('a key that cannot encrypt fails an in-thread job the same way', async () => {
    const signer = await generateKey(home, { email: 'signer2@example.test', signOnly: true });
    const signOnly = await openpgp.readKey({ armoredKey: signer.publicArmored });
    const inThread = new EncryptionPool(1);
    await assert.rejects(inThread.encrypt({ plaintext: Buffer.from('x'), copies: [{ keys: [signOnly] }], eol: '\n' }), /encryption failed/);
    assert.equal(inThread.started, 0);
    await inThread.close();
  });

  it('a worker that stops answering fails its jobs after the deadline and is replaced, for whole messages and key packets', { timeout: 20_000 }, async () => {
    const carol = await generateKey(home, { email: 'carol-stuck@example.test', algo: 'nistp256' });
    const [aliceKey, carolKey] = await Promise.all([alice, carol].map((gpg) => openpgp.readKey({ armoredKey: gpg.publicArmored })));
    const replaced: unknown[] = [];
    const logger = { error: (fields: object, message: string) => void replaced.push([fields, message]) };
    const stuck = new EncryptionPool(1, { answerWithinMs: 1_500, keyPacketsOnWorker: 'always', logger, workerScript: new URL('../helpers/stuck-worker.js', import.meta.url) });
    const big = (text: string) => Buffer.concat([Buffer.from(text), Buffer.alloc(IN_THREAD_LIMIT, 'b')]);
    try {
      const started = Date.now();
      await assert.rejects(stuck.encrypt({ plaintext: big('STUCK'), copies: [{ keys: [aliceKey!] }], eol: '\n' }), /encryption worker failed: no answer within 1500 ms/);
      assert.ok(Date.now() - started >= 1_490, 'not before the deadline');
      assert.equal(replaced.length, 1, 'the replacement is logged');
      const [copy] = await stuck.encrypt({ plaintext: big('fine'), copies: [{ keys: [aliceKey!] }], eol: '\n' });
      assert.deepEqual(await decrypt(home, Buffer.from(copy!)), big('fine'), 'the new worker encrypts');

      const small = Buffer.from('a small one');
      await assert.rejects(stuck.encrypt({ plaintext: small, copies: [{ keys: [carolKey!] }], eol: '\n' }), /no answer within 1500 ms/);
      assert.equal(replaced.length, 2);
      const [smallCopy] = await stuck.encrypt({ plaintext: small, copies: [{ keys: [aliceKey!] }], eol: '\n' });
      assert.deepEqual(await decrypt(home, Buffer.from(smallCopy!)), small);
      assert.equal(stuck.started, 1, 'replaced, not added');
    } finally {
      await stuck.close();
    }
  });

  it('a key that cannot encrypt fails the job, not the pool', async () => {
    const signer = await generateKey(home, { email: 'signer@example.test', signOnly: true });
    const signOnly = await openpgp.readKey({ armoredKey: signer.publicArmored });
    await assert.rejects(pool.encrypt({ plaintext: Buffer.from('x'), copies: [{ keys: [signOnly] }], eol: '\n' }), /encryption failed/);
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const [armored] = await pool.encrypt({ plaintext: Buffer.from('still works'), copies: [{ keys: [aliceKey] }], eol: '\n' });
    assert.equal((await decrypt(home, Buffer.from(armored!))).toString(), 'still works');
  });
});
