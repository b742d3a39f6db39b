/**
 * Where the Incoming Box keeps blob bytes. Metadata lives in the database (lacre_blobs); a storage object
 * only becomes a blob once a metadata row names it, so an object that no row names is invisible (and is
 * swept at start). The interface is small so that an object store can be added beside the filesystem.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { tryPidLock } from '../util/pid-lock.js';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { LacreError } from '../errors.js';
import { fsyncDirectory } from '../util/fs.js';
import { ensurePrivateDirectory } from '../util/private-dir.js';

export interface BlobKey {
  user: string;
  namespace: string;
  id: string;
}

export interface WrittenObject {
  /** The object's name within its user and namespace; unique per write. */
  name: string;
  size: number;
}

/** Inclusive byte range. */
export interface ByteRange {
  start: number;
  end: number;
}

/** The source was longer than allowed; nothing was kept and the source was read to its end. */
export class BlobTooLargeError extends LacreError {}

/** Another process holds the blob storage. */
export class BlobStorageLockedError extends LacreError {}

export interface WriteOptions {
  /** Bytes the object may hold, framing included; over it, BlobTooLargeError. */
  maxBytes?: number;
  /**
   * Bytes stored before the source, given the source's length (Soledad's preamble): their length must not
   * depend on it. Written first for `expectedSize` (0 when unknown) and, when the source turns out another
   * length, written again in place before the object is made durable.
   */
  framing?: (payloadSize: number) => Buffer;
  /** The source's length when known up front (Content-Length). */
  expectedSize?: number;
}

export interface BlobStorage {
  /**
   * Streams `source` (after `options.framing`) into a new object and makes it durable before resolving.
   * Over `maxBytes`, the rest of the source is read and dropped (so an HTTP request can still be answered)
   * and BlobTooLargeError is thrown. On any failure nothing is left behind.
   */
  write(key: BlobKey, source: AsyncIterable<Buffer>, options?: WriteOptions): Promise<WrittenObject>;
  /** Opens an object for reading (all of it, or an inclusive range); rejects when it does not exist. */
  read(key: BlobKey, name: string, range?: ByteRange): Promise<Readable>;
  /** The last `length` bytes of an object (fewer when it is shorter); rejects when it does not exist. */
  readTail(key: BlobKey, name: string, length: number): Promise<Buffer>;
  /** Removes an object; one that is already gone is not an error. */
  remove(key: BlobKey, name: string): Promise<void>;
  /**
   * Moves an object to another namespace of its user, durably; one already moved (gone from `key`'s
   * namespace) is not an error, so an interrupted run of moves can simply be run again.
   */
  move(key: BlobKey, name: string, toNamespace: string): Promise<void>;
  /** Every (user, namespace) holding objects, and their object names: for the orphan sweep. */
  listObjects(): AsyncIterable<{ user: string; namespace: string; names: string[] }>;
}

const TEMP_DIR = '.tmp';
const LOCK_FILE = '.lock';

/**
 * Blobs as files: `{root}/{user}/{namespace}/{id}.{random}`. A write goes to `{root}/.tmp/`, is fsynced,
 * renamed into place and its directory fsynced, so a crash leaves either the whole object or a temporary
 * file, never a partial object. One process owns a root at a time (`start()` takes `{root}/.lock` and
 * deletes what a crashed owner left in `.tmp`); reading and removing need no ownership (`lacre inbox purge`).
 */
export class FilesystemBlobStorage implements BlobStorage {
  readonly root: string;
  readonly #tempDir: string;
  /** Directories made durable by this process; concurrent first writes of a user wait on the same promise. */
  readonly #durableDirs = new Map<string, Promise<void>>();
  #releaseLock: (() => void) | undefined;

  readonly #fsyncDirectory: (dir: string) => Promise<void>;

  /** `options.fsyncDirectory` lets a test watch (and slow down) the directory fsyncs; the default is fsync(2). */
  constructor(root: string, options: { fsyncDirectory?: (dir: string) => Promise<void> } = {}) {
    this.#fsyncDirectory = options.fsyncDirectory ?? fsyncDirectory;
    this.root = resolve(root);
    this.#tempDir = join(this.root, TEMP_DIR);
  }

  /** Takes ownership of the root and removes temporary files left by a crash; returns how many. */
  async start(): Promise<number> {
    ensurePrivateDirectory(this.root, 'incoming_box.blobs_path');
    await mkdir(this.#tempDir, { recursive: true, mode: 0o700 });
    this.#releaseLock = lockRoot(join(this.root, LOCK_FILE));
    const leftovers = await readdir(this.#tempDir);
    await Promise.all(leftovers.map((name) => rm(join(this.#tempDir, name), { force: true, recursive: true })));
    await assertCaseSensitive(this.#tempDir);
    return leftovers.length;
  }

  close(): void {
    this.#releaseLock?.();
    this.#releaseLock = undefined;
  }

  async write(key: BlobKey, source: AsyncIterable<Buffer>, options: WriteOptions = {}): Promise<WrittenObject> {
    await mkdir(this.#tempDir, { recursive: true, mode: 0o700 });
    const tempPath = join(this.#tempDir, randomBytes(12).toString('hex'));
    const file = await open(tempPath, 'wx', 0o600);
    let closed = false;
    try {
      const size = await writeObject(file, source, options);
      await file.sync();
      await file.close();
      closed = true;
      const name = `${key.id}.${randomBytes(6).toString('hex')}`;
      await this.#renameIntoPlace(key, tempPath, name);
      return { name, size };
    } catch (error) {
      if (!closed) await file.close().catch(() => undefined);
      await unlink(tempPath).catch(() => undefined);
      throw error;
    }
  }

  async read(key: BlobKey, name: string, range?: ByteRange): Promise<Readable> {
    const file = await open(this.#path(key, name), 'r');
    return file.createReadStream(range ? { start: range.start, end: range.end } : {});
  }

  async readTail(key: BlobKey, name: string, length: number): Promise<Buffer> {
    const file = await open(this.#path(key, name), 'r');
    try {
      const { size } = await file.stat();
      const tail = Buffer.alloc(Math.min(length, size));
      const { bytesRead } = await file.read(tail, 0, tail.length, size - tail.length);
      return tail.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  }

  async remove(key: BlobKey, name: string): Promise<void> {
    await rm(this.#path(key, name), { force: true });
  }

  async move(key: BlobKey, name: string, toNamespace: string): Promise<void> {
    const target = { ...key, namespace: toNamespace };
    const from = this.#path(key, name);
    try {
      await rename(from, join(await this.#ensureDir(target), name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    // rename(2) is atomic: until both directories are durable a crash leaves the object in one of the two.
    await this.#fsyncDirectory(this.#dir(target));
    await this.#fsyncDirectory(dirname(from));
  }

  async *listObjects(): AsyncIterable<{ user: string; namespace: string; names: string[] }> {
    for (const user of await readdirOrEmpty(this.root)) {
      if (user.startsWith('.')) continue;
      for (const namespace of await readdirOrEmpty(join(this.root, user))) {
        const names = await readdirOrEmpty(join(this.root, user, namespace));
        if (names.length > 0) yield { user, namespace, names };
      }
    }
  }

  #dir(key: Pick<BlobKey, 'user' | 'namespace'>): string {
    const dir = join(this.root, key.user, key.namespace);
    // Ids and namespaces are validated by the server; this guards the filesystem against any other caller.
    if (relative(this.root, dir).split(sep).length !== 2 || key.user.startsWith('.')) throw new LacreError(`invalid blob location ${key.user}/${key.namespace}`);
    return dir;
  }

  #path(key: BlobKey, name: string): string {
    if (name.includes('/') || name.includes(sep) || name.startsWith('.')) throw new LacreError(`invalid blob name ${name}`);
    return join(this.#dir(key), name);
  }

  async #renameIntoPlace(key: BlobKey, tempPath: string, name: string): Promise<void> {
    const dir = await this.#ensureDir(key);
    try {
      await rename(tempPath, join(dir, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      // The directory was removed behind this process's back (by hand): make it again, once.
      this.#durableDirs.delete(dir);
      await rename(tempPath, join(await this.#ensureDir(key), name));
    }
    await this.#fsyncDirectory(dir);
  }

  /**
   * Creates {root}/{user}/{namespace} if needed, fsyncing each parent of a new directory. A second write that
   * finds the directory already there waits for the first one's fsyncs, or it could be acknowledged before
   * the directory holding its blob is durable.
   */
  async #ensureDir(key: BlobKey): Promise<string> {
    const dir = this.#dir(key);
    let durable = this.#durableDirs.get(dir);
    if (!durable) {
      durable = this.#createDurably(dir);
      this.#durableDirs.set(dir, durable);
      const settled = durable;
      // A later attempt may already have replaced a failed one: only forget this one.
      settled.catch(() => this.#durableDirs.get(dir) === settled && this.#durableDirs.delete(dir));
    }
    await durable;
    return dir;
  }

  async #createDurably(dir: string): Promise<void> {
    const firstCreated = await mkdir(dir, { recursive: true, mode: 0o700 });
    if (firstCreated === undefined) return;
    for (let current = dir; current !== dirname(firstCreated); current = dirname(current)) await this.#fsyncDirectory(dirname(current));
  }
}

/** The framing (if any), then the source, into `file`; resolves to the bytes written. */
async function writeObject(file: FileHandle, source: AsyncIterable<Buffer>, options: WriteOptions): Promise<number> {
  const expected = options.expectedSize ?? 0;
  const framing = options.framing?.(expected) ?? Buffer.alloc(0);
  const room = options.maxBytes === undefined ? undefined : options.maxBytes - framing.length;
  if (framing.length > 0) await file.write(framing);
  const payloadSize = await copyInto(file, source, room);
  if (options.framing && payloadSize !== expected) {
    const actual = options.framing(payloadSize);
    if (actual.length !== framing.length) throw new LacreError(`the framing of a blob changed length (${framing.length} to ${actual.length} bytes)`);
    await file.write(actual, 0, actual.length, 0);
  }
  return framing.length + payloadSize;
}

async function copyInto(file: FileHandle, source: AsyncIterable<Buffer>, maxBytes: number | undefined): Promise<number> {
  let size = 0;
  let tooLarge = false;
  // Never leave this loop early: that would destroy the source (for HTTP, the connection) before an answer.
  for await (const chunk of source) {
    size += chunk.length;
    if (tooLarge || (maxBytes !== undefined && size > maxBytes)) {
      tooLarge = true;
      continue;
    }
    await file.write(chunk);
  }
  if (tooLarge || (maxBytes !== undefined && maxBytes < 0)) throw new BlobTooLargeError(`blob of ${size} bytes exceeds the ${Math.max(0, maxBytes!)} bytes allowed`);
  return size;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    if (!(await stat(dir)).isDirectory()) return [];
    return await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/**
 * Namespaces may differ by case alone (Soledad's `MX`, Lacre's former `mx`): on a filesystem that folds case
 * they would share a directory, and the orphan sweep would take one's blobs for the other's orphans.
 */
async function assertCaseSensitive(dir: string): Promise<void> {
  const name = `case-probe-${randomBytes(6).toString('hex')}`;
  const probe = join(dir, name);
  await writeFile(probe, '', { mode: 0o600 });
  try {
    const folded = await stat(join(dir, name.toUpperCase())).then(
      () => true,
      () => false,
    );
    if (folded) throw new LacreError(`${dirname(dir)} is on a filesystem that ignores case: blob namespaces are case-sensitive (MX is not mx); use a case-sensitive one`);
  } finally {
    await rm(probe, { force: true });
  }
}

/** `{root}/.lock` holding the owner's pid; a lock left by a dead process is taken over. */
function lockRoot(lockPath: string): () => void {
  const lock = tryPidLock(lockPath);
  if (lock.acquired) return lock.release;
  throw new BlobStorageLockedError(`blob storage ${dirname(lockPath)} is in use by process ${lock.owner ?? '(unknown)'} (one box process per blobs_path)`);
}
