import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, test } from 'node:test';
import { FilesystemBlobStorage } from '../../src/box/storage.js';

describe('FilesystemBlobStorage', () => {
  let root: string;
  let storage: FilesystemBlobStorage;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'lacre-storage-'));
    storage = new FilesystemBlobStorage(root);
    await storage.start();
  });
  after(async () => {
    storage.close();
    await rm(root, { recursive: true, force: true });
  });

  test("concurrent first writes of a new user all land in the user's new directory, each readable", async () => {
    const keys = Array.from({ length: 8 }, (_, i) => ({ user: 'new-user', namespace: 'mx', id: `blob-${i}` }));
    const written = await Promise.all(keys.map((key, i) => storage.write(key, Readable.from([Buffer.from(`message ${i}`)]))));
    assert.equal((await readdir(join(root, 'new-user', 'mx'))).length, 8);
    for (const [i, object] of written.entries()) {
      assert.equal((await buffer(await storage.read(keys[i]!, object.name))).toString(), `message ${i}`);
    }
    assert.deepEqual(await readdir(join(root, '.tmp')), []);
  });

  test("a directory that could not be created is tried again by the next write (a failure is not remembered)", async () => {
    const key = { user: 'blocked-user', namespace: 'mx', id: 'm' };
    await writeFile(join(root, 'blocked-user'), 'a file where the user directory belongs');
    await assert.rejects(storage.write(key, Readable.from([Buffer.from('x')])), /EEXIST|ENOTDIR/);
    assert.deepEqual(await readdir(join(root, '.tmp')), [], 'nothing left behind');
    await rm(join(root, 'blocked-user'));
    const object = await storage.write(key, Readable.from([Buffer.from('x')]));
    assert.equal((await buffer(await storage.read(key, object.name))).toString(), 'x');
  });

  test("a user's directory removed behind the box's back (by hand) is made again by the next write", async () => {
    const key = { user: 'removed-user', namespace: 'mx', id: 'first' };
    await storage.write(key, Readable.from([Buffer.from('1')]));
    await rm(join(root, 'removed-user'), { recursive: true });
    const object = await storage.write({ ...key, id: 'second' }, Readable.from([Buffer.from('2')]));
    assert.equal((await buffer(await storage.read({ ...key, id: 'second' }, object.name))).toString(), '2');
    assert.deepEqual(await readdir(join(root, '.tmp')), []);
  });

  test("a second first-write of a new user is not acknowledged before the first one's parent fsyncs are done", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lacre-storage-fsync-'));
    const events: string[] = [];
    let releaseRoot: () => void = () => undefined;
    const rootFsyncHeld = new Promise<void>((resolve) => (releaseRoot = resolve));
    const watched = new FilesystemBlobStorage(dir, {
      async fsyncDirectory(path) {
        // The fsync making the new user directory durable (in the root) is slow.
        if (path === dir) {
          await rootFsyncHeld;
          events.push('root fsynced');
        }
      },
    });
    await watched.start();
    try {
      const first = watched.write({ user: 'fresh', namespace: 'mx', id: 'a' }, Readable.from([Buffer.from('a')])).then(() => events.push('first written'));
      const second = watched.write({ user: 'fresh', namespace: 'mx', id: 'b' }, Readable.from([Buffer.from('b')])).then(() => events.push('second written'));
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(events, [], 'neither write is acknowledged while the root fsync is pending');
      releaseRoot();
      await Promise.all([first, second]);
      assert.equal(events[0], 'root fsynced');
    } finally {
      watched.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
