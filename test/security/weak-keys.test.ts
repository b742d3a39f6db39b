import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGpgHome, gpgOk, type GpgHome } from '../helpers/gpg.js';
import { runLacre } from '../helpers/lacre.js';

const NO_PASSPHRASE = ['--batch', '--pinentry-mode', 'loopback', '--passphrase', ''];

/** A key gpg still makes but no one should encrypt to: generated here, exported armored. */
async function weakKey(home: GpgHome, email: string, primary: string, subkey?: string): Promise<string> {
  await gpgOk(home, [...NO_PASSPHRASE, '--quick-gen-key', `Weak <${email}>`, primary, subkey ? 'sign' : 'sign,encr', 'never']);
  if (subkey) {
    const listing = (await gpgOk(home, ['--with-colons', '--list-keys', email])).toString('utf8');
    const fingerprint = /^fpr:+([0-9A-F]{40}):/m.exec(listing)![1]!;
    await gpgOk(home, [...NO_PASSPHRASE, '--quick-add-key', fingerprint, subkey, 'encr', 'never']);
  }
  return (await gpgOk(home, ['--armor', '--export', email])).toString('utf8');
}

describe('lacre keys import refuses weak keys, saying why', () => {
  let home: GpgHome;
  let dir: string;

  before(async () => {
    home = await createGpgHome();
    dir = await mkdtemp(join(tmpdir(), 'lacre-weak-'));
  });
  after(async () => {
    await home?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  for (const [name, primary, subkey, reason] of [
    ['an RSA-1024 key', 'rsa1024', undefined, /RSA keys shorter than 2047 bits are considered too weak/],
    ['a DSA key with an ElGamal subkey', 'dsa2048', 'elg2048', /dsa keys are considered too weak/],
  ] as const) {
    it(`refuses ${name}: exit 1, the reason on stderr, nothing stored`, async () => {
      const email = `${primary}@example.test`;
      const file = join(dir, `${primary}.asc`);
      await writeFile(file, await weakKey(home, email, primary, subkey));
      const env = { LACRE_DATABASE_DATA_DIR: join(dir, 'db') };
      const imported = await runLacre(['keys', 'import', '--create', file], env);
      assert.equal(imported.code, 1, imported.stderr);
      assert.match(imported.stderr, /refused .* has no usable encryption \(sub\)key/);
      assert.match(imported.stderr, reason);
      const listed = await runLacre(['keys', 'list'], env);
      assert.equal(listed.code, 0, `keys list ran (else "not listed" proves nothing): ${listed.stderr}`);
      assert.doesNotMatch(listed.stdout.toString('utf8') + listed.stderr, new RegExp(email));
    });
  }
});
