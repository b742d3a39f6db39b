import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';

/** A lock file holding its owner's pid: taken, or held by a live process (whose pid, if readable). */
export type PidLock = { acquired: true; release(): void } | { acquired: false; owner: number | undefined };

/**
 * Creates `lockPath` with our pid. A lock left by a process that no longer runs is taken over; so is one
 * naming our own pid (a leftover, e.g. a restarted container reusing the pid). Other I/O errors are thrown.
 */
export function tryPidLock(lockPath: string): PidLock {
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return { acquired: true, release: releaser(lockPath) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = lockOwner(lockPath);
      const held = owner !== undefined && owner !== process.pid && isProcessAlive(owner);
      if (attempt > 0 || held) return { acquired: false, owner };
      unlinkSync(lockPath);
    }
  }
}

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function releaser(lockPath: string): () => void {
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    try {
      unlinkSync(lockPath);
    } catch {
      // Already gone.
    }
  };
}

function lockOwner(lockPath: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(lockPath, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
