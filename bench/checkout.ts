/** Where a record's commit stands against the checked-out one, asked of git; without git, says why not. */
import { execFileSync } from 'node:child_process';
import type { Checkout } from './report-text.js';

class GitUnavailable extends Error {}

function gitIn(repo: string, args: string[]): string {
  try {
    return execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new GitUnavailable('git is not installed');
    throw error;
  }
}

/** Exit status 0 → true, 1 → false (merge-base --is-ancestor); anything else throws. */
function gitSays(repo: string, args: string[]): boolean {
  try {
    gitIn(repo, args);
    return true;
  } catch (error) {
    if ((error as { status?: number }).status === 1) return false;
    throw error;
  }
}

function resolve(repo: string, commit: string): string | undefined {
  if (!/^[0-9a-f]{4,40}$/i.test(commit)) return undefined;
  try {
    return gitIn(repo, ['rev-parse', '--verify', '--quiet', `${commit}^{commit}`]);
  } catch (error) {
    if (error instanceof GitUnavailable) throw error;
    return undefined;
  }
}

/** The record's commit (a short hash) against HEAD of the repository at `repo`: how many commits behind, and how many of those change src/. */
export function readCheckout(repo: string, commit: string): Checkout {
  let head: string;
  try {
    head = gitIn(repo, ['rev-parse', '--short', 'HEAD']);
  } catch (error) {
    return { kind: 'no-git', reason: error instanceof GitUnavailable ? error.message : `${repo} is not a git work tree` };
  }
  const full = resolve(repo, commit);
  if (!full) return { kind: 'unknown-commit', head };
  const headFull = gitIn(repo, ['rev-parse', 'HEAD']);
  const range = `${full}..HEAD`;
  return {
    kind: 'known',
    head,
    same: full === headFull,
    ancestor: gitSays(repo, ['merge-base', '--is-ancestor', full, 'HEAD']),
    behind: Number(gitIn(repo, ['rev-list', '--count', range])),
    codeChanges: Number(gitIn(repo, ['rev-list', '--count', range, '--', 'src'])),
  };
}
