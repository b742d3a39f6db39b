import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { deliverToMaildir, ensureMaildir, MaildirWriteError, uniqueName } from '../../src/box-client/maildir.js';

describe('Maildir delivery', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'lacre-maildir-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  test('creates tmp/, new/ and cur/ (0700) and delivers the exact bytes into new/, leaving tmp/ empty', async () => {
    const dir = join(root, 'fresh', 'Maildir');
    const message = Buffer.concat([Buffer.from('Subject: x\r\n\r\nbody\r\n'), Buffer.from([0, 0xff, 0x0a])]);
    const path = await deliverToMaildir(dir, Readable.from([message.subarray(0, 5), message.subarray(5)]));
    assert.equal(dirname(path), join(dir, 'new'));
    assert.deepEqual(await readFile(path), message);
    for (const sub of ['tmp', 'new', 'cur']) assert.equal((await stat(join(dir, sub))).mode & 0o777, 0o700);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.deepEqual(await readdir(join(dir, 'cur')), []);
  });

  test('names follow time.pid_rand.host and never repeat', async () => {
    const dir = join(root, 'names');
    const paths = await Promise.all(Array.from({ length: 20 }, (_, i) => deliverToMaildir(dir, Readable.from([Buffer.from(`m${i}`)]))));
    const names = paths.map((p) => basename(p));
    assert.equal(new Set(names).size, 20);
    const host = hostname().replaceAll('/', '\\057').replaceAll(':', '\\072');
    for (const name of names) {
      const match = /^(\d+)\.(\d+)_([0-9a-f]{16})\.(.+)$/.exec(name);
      assert.ok(match, name);
      assert.ok(Math.abs(Number(match[1]) - Date.now() / 1000) < 60);
      assert.equal(Number(match[2]), process.pid);
      assert.equal(match[4], host);
    }
    assert.equal((await readdir(join(dir, 'new'))).length, 20);
    assert.match(uniqueName(new Date(1_700_000_000_000)), /^1700000000\./);
  });

  test('a source that fails midway leaves nothing in new/ or tmp/', async () => {
    const dir = join(root, 'failing');
    await ensureMaildir(dir);
    async function* broken() {
      yield Buffer.from('Subject: partial\r\n\r\nfirst half');
      throw new Error('integrity check failed');
    }
    await assert.rejects(deliverToMaildir(dir, broken()), (error) => !(error instanceof MaildirWriteError) && /integrity check failed/.test(String(error)));
    assert.deepEqual(await readdir(join(dir, 'new')), []);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  });

  test("the filesystem's failures are MaildirWriteError (released by a consumer, not FAILED); nothing is left", async () => {
    const dir = join(root, 'broken');
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await writeFile(join(dir, 'new'), 'a file where new/ belongs');
    await assert.rejects(deliverToMaildir(dir, Readable.from([Buffer.from('m')])), (error) => error instanceof MaildirWriteError && error.defer && /cannot create the Maildir/.test(error.message));
    await rm(join(dir, 'new'));
    await mkdir(join(dir, 'new'));
    await mkdir(join(dir, 'cur'));
    await mkdir(join(dir, 'new', 'x'));
    await rm(join(dir, 'tmp'), { recursive: true });
    // A tmp/ where no file can be created (as root, permissions would not stop it; /proc does).
    await symlink('/proc', join(dir, 'tmp'));
    await assert.rejects(deliverToMaildir(dir, Readable.from([Buffer.from('m')])), (error) => error instanceof MaildirWriteError && /cannot create a file in tmp\//.test(error.message));
    assert.deepEqual(await readdir(join(dir, 'new')), ['x']);
  });

  test('a failing fsync of new/ takes the message back out: nothing is left to be delivered twice by the retry', async () => {
    const dir = join(root, 'fsync-fails');
    const failing = async () => {
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    };
    await assert.rejects(
      deliverToMaildir(dir, Readable.from([Buffer.from('m')]), { fsyncDirectory: failing }),
      (error) => error instanceof MaildirWriteError && error.defer && /cannot fsync new\//.test(error.message),
    );
    for (const sub of ['tmp', 'new', 'cur']) assert.deepEqual(await readdir(join(dir, sub)), [], `${sub}/ is empty`);
  });

  test('a failing fsync of new/ after a reader moved the message on to cur/ counts as delivered', async () => {
    const dir = join(root, 'fsync-fails-read');
    const readerMovesItFirst = async (newDir: string) => {
      for (const name of await readdir(newDir)) await rename(join(newDir, name), join(dir, 'cur', `${name}:2,S`));
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    };
    const path = await deliverToMaildir(dir, Readable.from([Buffer.from('seen')]), { fsyncDirectory: readerMovesItFirst });
    assert.equal(dirname(path), join(dir, 'new'));
    const read = await readdir(join(dir, 'cur'));
    assert.deepEqual(read, [`${basename(path)}:2,S`]);
    assert.equal(await readFile(join(dir, 'cur', read[0]!), 'utf8'), 'seen');
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  });

  test('an existing Maildir is used as it is', async () => {
    const dir = join(root, 'existing');
    await ensureMaildir(dir);
    const first = await deliverToMaildir(dir, Readable.from([Buffer.from('one')]));
    const second = await deliverToMaildir(dir, Readable.from([Buffer.from('two')]));
    assert.deepEqual((await readdir(join(dir, 'new'))).sort(), [basename(first), basename(second)].sort());
    assert.equal(await readFile(second, 'utf8'), 'two');
  });
});
