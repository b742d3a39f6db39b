/**
 * Maildir delivery (https://cr.yp.to/proto/maildir.html): write into tmp/ under a unique name, fsync, then link
 * into new/ and remove the tmp/ name. A reader only ever sees complete messages in new/; a crash leaves at most a
 * file in tmp/, which readers ignore and clean up after 36 hours.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { errorMessage } from '../errors.js';
import { fsyncDirectory } from '../util/fs.js';
import { DeferProcessingError } from './consumer.js';

const SUBDIRS = ['tmp', 'new', 'cur'] as const;

/**
 * The Maildir could not take the message (disk full, permissions, a file where a directory belongs): trouble of
 * this machine, not of the message, so a consumer releases the blob for a later run.
 */
export class MaildirWriteError extends DeferProcessingError {}

/** Creates DIR and its tmp/, new/ and cur/ (mode 0700) when missing. */
export async function ensureMaildir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const sub of SUBDIRS) await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
}

/** time.pid_rand.host, with `/` and `:` in the host name escaped as the Maildir spec asks. */
export function uniqueName(now = new Date()): string {
  const seconds = Math.floor(now.getTime() / 1000);
  const host = hostname().replaceAll('/', '\\057').replaceAll(':', '\\072');
  return `${seconds}.${process.pid}_${randomBytes(8).toString('hex')}.${host}`;
}

export interface MaildirOptions {
  /** How a directory is fsynced (util/fs.ts); tests put a failing one in place. */
  fsyncDirectory?: (dir: string) => Promise<void>;
}

/**
 * Delivers one message into the Maildir (created if missing) and resolves with its path in new/. The message is
 * visible in new/ only once every byte is on disk; on any failure nothing is left behind, in tmp/ or new/, so a
 * retry cannot deliver it twice. Filesystem failures are MaildirWriteError; an error of `message` itself (a
 * decryption that fails midway) is passed on as it is.
 */
export async function deliverToMaildir(dir: string, message: Readable | AsyncIterable<Buffer>, options: MaildirOptions = {}): Promise<string> {
  await local('create the Maildir', ensureMaildir(dir));
  const name = uniqueName();
  const tmpPath = join(dir, 'tmp', name);
  try {
    await writeDurably(tmpPath, message);
    return await publish(dir, tmpPath, name, options.fsyncDirectory ?? fsyncDirectory);
  } catch (error) {
    await unlink(tmpPath).catch(() => undefined);
    throw error;
  }
}

async function writeDurably(path: string, message: Readable | AsyncIterable<Buffer>): Promise<void> {
  // 'wx': a name that already exists in tmp/ is a collision, never something to overwrite.
  const handle = await local('create a file in tmp/', open(path, 'wx', 0o600));
  try {
    for await (const chunk of message as AsyncIterable<Buffer>) await local('write to tmp/', handle.write(chunk));
    await local('fsync the message', handle.sync());
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * link() into new/ (refuses to replace an existing name) and fsync new/; rename where links are not supported.
 * Once the name is in new/ a reader may see it, so a failure after that takes it back out.
 */
async function publish(dir: string, tmpPath: string, name: string, fsyncDir: (dir: string) => Promise<void>): Promise<string> {
  const newPath = join(dir, 'new', name);
  try {
    await link(tmpPath, newPath);
    // Delivered: a tmp/ name left by a failing unlink is harmless (readers clean tmp/ after 36 hours).
    await unlink(tmpPath).catch(() => undefined);
  } catch (error) {
    if (!linkUnsupported(error)) throw new MaildirWriteError(`cannot link into new/: ${errorMessage(error)}`, { cause: error });
    await local('rename into new/', rename(tmpPath, newPath));
  }
  try {
    await fsyncDir(join(dir, 'new'));
  } catch (error) {
    if (await withdraw(newPath)) throw new MaildirWriteError(`cannot fsync new/: ${errorMessage(error)}`, { cause: error });
  }
  return newPath;
}

/**
 * Takes a published message back out of new/; false when a reader already moved it on (then it was delivered
 * after all). An unlink failing otherwise (a broken filesystem) still counts as withdrawn: the blob is then
 * retried, and a duplicate is better than a loss.
 */
async function withdraw(newPath: string): Promise<boolean> {
  try {
    await unlink(newPath);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

async function local<T>(what: string, operation: Promise<T>): Promise<T> {
  try {
    return await operation;
  } catch (error) {
    throw new MaildirWriteError(`cannot ${what}: ${errorMessage(error)}`, { cause: error });
  }
}

function linkUnsupported(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'ENOSYS';
}
