import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readPrivateKey } from 'openpgp';
import { createSubmissionKey, loadSubmissionKey, SubmissionKeyExistsError, writeSubmissionKey } from '../../src/web/wks-key.js';
import { createGpgHome, gpgOk } from '../helpers/gpg.js';
import { runLacre } from '../helpers/lacre.js';

const ADDRESS = 'key-submission@example.org';

describe('WKS submission key', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lacre-wks-key-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('lacre wks init writes a 0600 key in a new 0700 directory, prints its fingerprint, refuses to overwrite without --force', async () => {
    const path = join(dir, 'cli', 'nested', 'wks.asc');
    const env = { LACRE_WEB_WKS_SUBMISSION_ADDRESS: ADDRESS, LACRE_WEB_WKS_KEY_PATH: path, LACRE_WEB_SENDER: 'keys@example.org', LACRE_KEYS_DOMAINS: 'example.org', LACRE_CONFIG: '' };
    const first = await runLacre(['wks', 'init'], env);
    assert.equal(first.code, 0, first.stderr);
    const fingerprint = first.stdout.toString('utf8').trim();
    assert.match(fingerprint, /^[0-9A-F]{40}$/);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'cli', 'nested'))).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, 'cli'))).mode & 0o777, 0o700);
    const key = await loadSubmissionKey(path);
    assert.equal(key.getFingerprint().toUpperCase(), fingerprint);
    assert.deepEqual(key.getUserIDs(), [`<${ADDRESS}>`]);

    const again = await runLacre(['wks', 'init'], env);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /exists already/);
    assert.equal((await loadSubmissionKey(path)).getFingerprint().toUpperCase(), fingerprint, 'the key is unchanged');

    const forced = await runLacre(['wks', 'init', '--force'], env);
    assert.equal(forced.code, 0, forced.stderr);
    const replaced = forced.stdout.toString('utf8').trim();
    assert.notEqual(replaced, fingerprint);
    assert.equal((await loadSubmissionKey(path)).getFingerprint().toUpperCase(), replaced);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
  });

  test('without web.wks_submission_address it says what to set', async () => {
    const result = await runLacre(['wks', 'init'], { LACRE_WEB_WKS_KEY_PATH: join(dir, 'none.asc'), LACRE_CONFIG: '' });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /web\.wks_submission_address/);
  });

  test('the file is 0600 and the directory 0700 even under umask 000', async () => {
    const previous = process.umask(0);
    try {
      const path = join(dir, 'open-umask', 'wks.asc');
      const { armored } = await createSubmissionKey(ADDRESS);
      await writeSubmissionKey(path, armored, { force: false });
      assert.equal((await stat(path)).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, 'open-umask'))).mode & 0o777, 0o700);
      await assert.rejects(writeSubmissionKey(path, armored, { force: false }), SubmissionKeyExistsError);
      await writeSubmissionKey(path, armored, { force: true });
      assert.equal((await stat(path)).mode & 0o777, 0o600);
    } finally {
      process.umask(previous);
    }
  });

  test('GnuPG 2.2 can encrypt to the public part (what gpg-wks-client does)', async () => {
    const { armored, fingerprint } = await createSubmissionKey(ADDRESS);
    const publicArmored = (await readPrivateKey({ armoredKey: armored })).toPublic().armor();
    const home = await createGpgHome();
    try {
      await gpgOk(home, ['--batch', '--import'], publicArmored);
      const encrypted = await gpgOk(home, ['--batch', '--trust-model', 'always', '--armor', '--encrypt', '-r', fingerprint], 'hello');
      assert.match(encrypted.toString('utf8'), /BEGIN PGP MESSAGE/);
    } finally {
      await home.remove();
    }
  });
});
