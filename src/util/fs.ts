import { open } from 'node:fs/promises';

/** fsync(2) of a directory: makes the names created, renamed or removed in it durable. */
export async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
