/**
 * Where the Incoming Box keeps blob bytes. Metadata lives in the database (lacre_blobs); a storage object
 * only becomes a blob once a metadata row names it, so an object that no row names is invisible (and is
 * swept at start). The interface is small so that an object store can be added beside the filesystem.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
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

export interface BlobStorage {
  /**
   * Streams `source` into a new object and makes it durable before resolving. Over `maxBytes`, the rest
   * of the source is read and dropped (so an HTTP request can still be answered) and BlobTooLargeError
   * is thrown. On any failure nothing is left behind.
   */
  write(key: BlobKey, source: AsyncIterable<Buffer>, options?: { maxBytes?: number }): Promise<WrittenObject>;
  /** Opens an object for reading (all of it, or an inclusive range); rejects when it does not exist. */
  read(key: BlobKey, name: string, range?: ByteRange): Promise<Readable>;
  /** Removes an object; one that is already gone is not an error. */
  remove(key: BlobKey, name: string): Promise<void>;
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
    return leftovers.length;
  }

  close(): void {
    this.#releaseLock?.();
    this.#releaseLock = undefined;
  }

  async write(key: BlobKey, source: AsyncIterable<Buffer>, options: { maxBytes?: number } = {}): Promise<WrittenObject> {
    await mkdir(this.#tempDir, { recursive: true, mode: 0o700 });
    const tempPath = join(this.#tempDir, randomBytes(12).toString('hex'));
    const file = await open(tempPath, 'wx', 0o600);
    let closed = false;
    try {
      const size = await copyInto(file, source, options.maxBytes);
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

  async remove(key: BlobKey, name: string): Promise<void> {
    await rm(this.#path(key, name), { force: true });
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
  if (tooLarge) throw new BlobTooLargeError(`blob of ${size} bytes exceeds the ${maxBytes} bytes allowed`);
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

/** `{root}/.lock` holding the owner's pid; a lock left by a dead process is taken over. */
function lockRoot(lockPath: string): () => void {
  const lock = tryPidLock(lockPath);
  if (lock.acquired) return lock.release;
  throw new BlobStorageLockedError(`blob storage ${dirname(lockPath)} is in use by process ${lock.owner ?? '(unknown)'} (one box process per blobs_path)`);
}
