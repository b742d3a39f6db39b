import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, test } from 'node:test';
import { BlobTooLargeError, FilesystemBlobStorage } from '../../src/box/storage.js';

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

  describe('framing', () => {
    /** A framing whose bytes say the payload's size, of one length whatever the size (as Soledad's preamble). */
    const framing = (payloadSize: number) => Buffer.from(`[${String(payloadSize).padStart(8, '0')}] `);
    const chunks = (...parts: string[]) => Readable.from(parts.map((part) => Buffer.from(part)));

    test('is written before the payload for the size announced, and rewritten in place when the size differs', async () => {
      const key = { user: 'framed', namespace: 'MX', id: 'f' };
      const announced = await storage.write(key, chunks('hello ', 'world'), { framing, expectedSize: 11 });
      assert.equal(announced.size, 11 + 11);
      assert.equal((await buffer(await storage.read(key, announced.name))).toString(), '[00000011] hello world');
      const unknown = await storage.write({ ...key, id: 'g' }, chunks('a', 'bc', 'def'), { framing });
      assert.equal((await buffer(await storage.read(key, unknown.name))).toString(), '[00000006] abcdef', 'chunked: size 0 first, then patched');
      const wrong = await storage.write({ ...key, id: 'h' }, chunks('xyz'), { framing, expectedSize: 99 });
      assert.equal((await buffer(await storage.read(key, wrong.name))).toString(), '[00000003] xyz');
      await assert.rejects(storage.write({ ...key, id: 'i' }, chunks('x'), { framing: (size) => Buffer.from('#'.repeat(size + 1)) }), /changed length/);
      assert.deepEqual(await readdir(join(root, '.tmp')), []);
    });

    test('counts against maxBytes', async () => {
      const key = { user: 'framed', namespace: 'MX', id: 'max' };
      assert.equal((await storage.write(key, chunks('12345'), { framing, maxBytes: 16 })).size, 16);
      await assert.rejects(storage.write({ ...key, id: 'over' }, chunks('123456'), { framing, maxBytes: 16 }), BlobTooLargeError);
      await assert.rejects(storage.write({ ...key, id: 'tiny' }, chunks(), { framing, maxBytes: 5 }), BlobTooLargeError, 'no room even for the framing');
      assert.deepEqual(await readdir(join(root, '.tmp')), []);
    });
  });

  test('readTail reads the last bytes, or all of a shorter object', async () => {
    const key = { user: 'tails', namespace: 'MX', id: 't' };
    const long = await storage.write(key, Readable.from([Buffer.from('0123456789abcdefghijklmnop')]));
    assert.equal((await storage.readTail(key, long.name, 16)).toString(), 'abcdefghijklmnop');
    const short = await storage.write({ ...key, id: 's' }, Readable.from([Buffer.from('abc')]));
    assert.equal((await storage.readTail(key, short.name, 16)).toString(), 'abc');
    const empty = await storage.write({ ...key, id: 'e' }, Readable.from([]));
    assert.equal((await storage.readTail(key, empty.name, 16)).length, 0);
    await assert.rejects(storage.readTail(key, 'absent.0', 16), { code: 'ENOENT' });
  });

  test('move puts an object in another namespace of its user; moving it again is no error', async () => {
    const key = { user: 'mover', namespace: 'mx', id: 'm' };
    const object = await storage.write(key, Readable.from([Buffer.from('moved')]));
    await storage.move(key, object.name, 'MX');
    assert.deepEqual(await readdir(join(root, 'mover', 'mx')), []);
    assert.equal(await readFile(join(root, 'mover', 'MX', object.name), 'utf8'), 'moved');
    await storage.move(key, object.name, 'MX');
    assert.equal((await buffer(await storage.read({ ...key, namespace: 'MX' }, object.name))).toString(), 'moved');
  });
});
