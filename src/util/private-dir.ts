import { chmodSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { LacreError } from '../errors.js';

/** A directory Lacre keeps its data in is writable by other users: it refuses to use it. */
export class UnsafeDirectoryError extends LacreError {}

const WRITABLE_BY_OTHERS = 0o022;
const TRAVERSABLE_BY_OTHERS = 0o011;

/**
 * Creates `dir` (and missing parents) mode 0700 whatever the umask, or, when it exists, refuses it if
 * another user could change anything in it. `setting` names the config key, for the message.
 * Returns the absolute path.
 */
export function ensurePrivateDirectory(dir: string, setting: string): string {
  const path = resolve(dir);
  const created = mkdirSync(path, { recursive: true, mode: 0o700 });
  if (created !== undefined) {
    // mkdir's mode passes through the umask; these are ours, so say it outright.
    for (let current = path; current.length >= created.length; current = dirname(current)) chmodSync(current, 0o700);
    return path;
  }
  assertNotWritableByOthers(path, setting);
  return path;
}

/** Throws UnsafeDirectoryError naming the first entry another user could write, and how to fix it. */
export function assertNotWritableByOthers(dir: string, setting: string): void {
  const path = resolve(dir);
  const offender = writableByOthers(path);
  if (offender === undefined) return;
  const what = offender.path === path ? `is mode ${octal(offender.mode)}` : `holds ${offender.path}, mode ${octal(offender.mode)}, which`;
  throw new UnsafeDirectoryError(
    `${setting} ${path} ${what} other users can write: anyone on this host could change what Lacre keeps there. ` +
      `Lacre will not use it until you fix it, e.g. with: chmod 700 ${path}`,
  );
}

/**
 * The first entry at or below `path` that a user other than its owner can write and reach. A directory
 * that others cannot enter (no group or other x bit) hides everything below it, so the walk stops there:
 * a 0700 data directory costs one stat, however many files it holds. Symbolic links are not followed.
 */
function writableByOthers(path: string): { path: string; mode: number } | undefined {
  const stats = lstatSync(path, { throwIfNoEntry: false });
  if (!stats || stats.isSymbolicLink()) return undefined;
  const mode = stats.mode & 0o7777;
  if (mode & WRITABLE_BY_OTHERS) return { path, mode };
  if (!stats.isDirectory() || !(mode & TRAVERSABLE_BY_OTHERS)) return undefined;
  for (const name of readdirSync(path)) {
    const found = writableByOthers(join(path, name));
    if (found) return found;
  }
  return undefined;
}

/**
 * Takes group and other bits off everything at or below `root` (symbolic links are not followed);
 * returns how many entries it changed.
 */
export function restrictToOwner(root: string): number {
  const stats = lstatSync(root, { throwIfNoEntry: false });
  if (!stats || stats.isSymbolicLink()) return 0;
  let changed = 0;
  if (stats.mode & 0o077) {
    chmodSync(root, stats.mode & 0o7700);
    changed++;
  }
  if (stats.isDirectory()) for (const name of readdirSync(root)) changed += restrictToOwner(join(root, name));
  return changed;
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, '0')}`;
}
