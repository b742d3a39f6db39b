import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readCheckout } from '../../bench/checkout.js';

describe('where the newest record stands against the checked-out commit (real git)', () => {
  let repo = '';
  const commits: string[] = [];
  const git = (...args: string[]) => execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
  const commit = (path: string, message: string) => {
    mkdirSync(join(repo, path, '..'), { recursive: true });
    writeFileSync(join(repo, path), message);
    git('add', '.');
    git('-c', 'user.name=t', '-c', 'user.email=t@example.org', '-c', 'commit.gpgsign=false', 'commit', '-q', '-m', message);
    commits.push(git('rev-parse', '--short', 'HEAD'));
  };

  before(() => {
    repo = mkdtempSync(join(tmpdir(), 'lacre-checkout-'));
    git('init', '-q');
    commit('src/a.ts', 'measured');
    commit('bench/history.jsonl', 'record');
    commit('src/a.ts', 'code changed');
    commit('README.md', 'docs');
  });
  after(() => rmSync(repo, { recursive: true, force: true }));

  it('counts the commits since the record and those that change src/', () => {
    assert.deepEqual(readCheckout(repo, commits[0]!), { kind: 'known', head: commits[3], same: false, ancestor: true, behind: 3, codeChanges: 1 });
  });

  it('knows the checked-out commit', () => {
    assert.deepEqual(readCheckout(repo, commits[3]!), { kind: 'known', head: commits[3], same: true, ancestor: true, behind: 0, codeChanges: 0 });
  });

  it('says when the record names a commit this repository lacks', () => {
    assert.deepEqual(readCheckout(repo, 'fedcba9'), { kind: 'unknown-commit', head: commits[3] });
    assert.deepEqual(readCheckout(repo, 'unknown'), { kind: 'unknown-commit', head: commits[3] });
  });

  it('degrades to no git outside a repository', () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'lacre-nogit-'));
    try {
      assert.equal(readCheckout(elsewhere, commits[0]!).kind, 'no-git');
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});
