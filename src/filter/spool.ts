import { createCipheriv, createDecipheriv, type Cipher } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline, Readable, Writable } from 'node:stream';
import { isProcessAlive } from '../util/pid-lock.js';
import { secureRandomBytes } from '../util/random.js';
import { ensurePrivateDirectory } from '../util/private-dir.js';

/**
 * Holds one copy's bytes so that every copy can re-read them. Small ones stay in memory (up to memoryLimit);
 * bigger ones spill to a 0600 file in `dir`. What spills is sealed with AES-256-CTR under a key that lives in
 * this object alone: most spools hold OpenPGP ciphertext already, but a message that arrived encrypted for an
 * Incoming Box spools as received, header lines in clear (rule 5). A file left by a crash is unreadable noise.
 */
export class CipherSpool extends Writable {
  private readonly chunks: Buffer[] = [];
  private memoryBytes = 0;
  private file: { path: string; stream: WriteStream; seal: Cipher; key: Buffer; iv: Buffer } | undefined;
  private totalBytes = 0;
  private fileError: Error | undefined;
  private spilling: Promise<void> | undefined;
  private disposed = false;

  constructor(private readonly dir: string, private readonly memoryLimit: number) {
    super();
  }

  get size(): number {
    return this.totalBytes;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.totalBytes += chunk.length;
    if (!this.file && this.memoryBytes + chunk.length <= this.memoryLimit) {
      this.chunks.push(chunk);
      this.memoryBytes += chunk.length;
      done();
      return;
    }
    this.spilling ??= this.spill();
    this.spilling.then(() => {
      if (!this.file) return done(new Error('ciphertext spool was disposed'));
      this.file.stream.write(this.file.seal.update(chunk), (error) => done(error));
    }, done);
  }

  override _final(done: (error?: Error | null) => void): void {
    if (!this.file) return done();
    this.file.stream.end((error?: Error | null) => done(error ?? this.fileError));
  }

  /** A fresh reader over all the bytes written; call after 'finish'. */
  reader(): Readable {
    if (!this.file) return Readable.from(this.chunks);
    const unseal = createDecipheriv('aes-256-ctr', this.file.key, this.file.iv);
    // pipeline() hands a read error on to `unseal`, which the consumer listens to.
    return pipeline(createReadStream(this.file.path, { highWaterMark: 256 * 1024 }), unseal, () => undefined);
  }

  /** Drops the ciphertext; a file being created meanwhile is not created (or removed once it is). */
  async dispose(): Promise<void> {
    this.disposed = true;
    await this.spilling?.catch(() => undefined);
    const file = this.file;
    this.file = undefined;
    this.chunks.length = 0;
    if (!file) return;
    file.stream.destroy();
    await unlink(file.path).catch(() => undefined);
  }

  private async spill(): Promise<void> {
    privateSpoolDirectory(this.dir);
    // Again each time: a tmp cleaner may have removed it since (recreated 0700: the umask cannot add bits).
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (this.disposed) return;
    const path = join(this.dir, `lacre-${process.pid}-${secureRandomBytes(8).toString('hex')}.pgp`);
    const stream = createWriteStream(path, { mode: 0o600, flags: 'wx' });
    // Write errors reach _write's callback; a listener must still take the event, or an error arriving
    // after dispose() (a write in flight when the message was aborted) would end the process.
    stream.on('error', (error) => {
      this.fileError ??= error;
    });
    const key = secureRandomBytes(32);
    const iv = secureRandomBytes(16);
    const seal = createCipheriv('aes-256-ctr', key, iv);
    this.file = { path, stream, seal, key, iv };
    for (const chunk of this.chunks.splice(0)) stream.write(seal.update(chunk));
    this.memoryBytes = 0;
  }
}

const checkedSpoolDirs = new Set<string>();

/**
 * Creates the spool directory 0700, or refuses it when other users can write in it: the ciphertext is
 * sealed, but not authenticated, so whoever could change it could change the message. Once per process.
 */
function privateSpoolDirectory(dir: string): void {
  if (checkedSpoolDirs.has(dir)) return;
  ensurePrivateDirectory(dir, 'encryption.spool_dir');
  checkedSpoolDirs.add(dir);
}

/**
 * For `lacre serve` at start: makes sure the spool directory is private (see privateSpoolDirectory) and
 * removes ciphertext spilled by Lacre processes that no longer run (a crash or a kill mid-message).
 */
export async function prepareSpool(dir: string | undefined, logger: { info(obj: object, msg: string): void }): Promise<void> {
  const spoolDir = dir ?? defaultSpoolDir();
  privateSpoolDirectory(spoolDir);
  const names = await readdir(spoolDir).catch(() => [] as string[]);
  const stale = names.filter((name) => {
    const pid = Number(/^lacre-(\d+)-[0-9a-f]+\.pgp$/.exec(name)?.[1]);
    return Number.isInteger(pid) && pid > 0 && !isProcessAlive(pid);
  });
  await Promise.all(stale.map((name) => unlink(join(spoolDir, name)).catch(() => undefined)));
  if (stale.length > 0) logger.info({ spoolDir, removed: stale.length }, 'removed stale spool files');
}

export function defaultSpoolDir(): string {
  return join(tmpdir(), 'lacre-spool');
}
