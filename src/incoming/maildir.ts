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

const SUBDIRS = ['tmp', 'new', 'cur'] as const;

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

/**
 * Delivers one message into the Maildir (created if missing) and resolves with its path in new/. The message is
 * visible in new/ only once every byte is on disk; on any failure nothing is left behind, in tmp/ or new/.
 */
export async function deliverToMaildir(dir: string, message: Readable | AsyncIterable<Buffer>): Promise<string> {
  await ensureMaildir(dir);
  const name = uniqueName();
  const tmpPath = join(dir, 'tmp', name);
  try {
    await writeDurably(tmpPath, message);
    const newPath = await publish(dir, tmpPath, name);
    await fsyncDirectory(join(dir, 'new'));
    return newPath;
  } catch (error) {
    await unlink(tmpPath).catch(() => undefined);
    throw error;
  }
}

async function writeDurably(path: string, message: Readable | AsyncIterable<Buffer>): Promise<void> {
  // 'wx': a name that already exists in tmp/ is a collision, never something to overwrite.
  const handle = await open(path, 'wx', 0o600);
  try {
    for await (const chunk of message as AsyncIterable<Buffer>) await handle.write(chunk);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** link() into new/ (refuses to replace an existing name), then drop the tmp/ name; rename where links are not supported. */
async function publish(dir: string, tmpPath: string, name: string): Promise<string> {
  const newPath = join(dir, 'new', name);
  try {
    await link(tmpPath, newPath);
  } catch (error) {
    if (!linkUnsupported(error)) throw error;
    await rename(tmpPath, newPath);
    return newPath;
  }
  await unlink(tmpPath);
  return newPath;
}

function linkUnsupported(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'ENOSYS';
}

async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
