/**
 * The WKS submission key pair: the one secret key Lacre holds. Users' clients encrypt their submissions and
 * confirmation responses to it; it lives armored, unprotected, in web.wks_key_path (0600, in a 0700 directory),
 * so that the service can decrypt without a passphrase. `lacre wks init` creates it.
 */
import { randomBytes } from 'node:crypto';
import { chmod, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { generateKey, readPrivateKey, type PrivateKey } from 'openpgp';
import { LacreError } from '../errors.js';
import { ensurePrivateDirectory } from '../util/private-dir.js';

/** The key file is already there and --force was not given. */
export class SubmissionKeyExistsError extends LacreError {}

/**
 * A new key pair for the submission address: Ed25519 + Curve25519 in the v4 encoding GnuPG 2.2 reads
 * ("curve25519Legacy"; openpgp.js's own "curve25519" makes RFC 9580 keys that gpg-wks-client cannot encrypt to).
 */
export async function createSubmissionKey(address: string, date = new Date()): Promise<{ armored: string; fingerprint: string }> {
  const { privateKey } = await generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs: [{ email: address }],
    format: 'armored',
    date,
  });
  const key = await readPrivateKey({ armoredKey: privateKey });
  return { armored: privateKey, fingerprint: key.getFingerprint().toUpperCase() };
}

/**
 * Writes the armored secret key to `path`, 0600 whatever the umask, its directory created 0700 when missing.
 * Refuses an existing file unless `force`; a forced replacement is written beside it and renamed over it, so the
 * old key stays whole until the new one is.
 */
export async function writeSubmissionKey(path: string, armored: string, options: { force: boolean }): Promise<void> {
  const dir = ensurePrivateDirectory(dirname(path), 'web.wks_key_path');
  const target = join(dir, basename(path));
  const temporary = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const file = await open(options.force ? temporary : target, 'wx', 0o600).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'EEXIST') throw new SubmissionKeyExistsError(`${target} exists already; lacre wks init --force replaces it (clients that cached the old key must fetch the new one)`);
    throw error;
  });
  try {
    await file.chmod(0o600);
    await file.writeFile(armored, 'utf8');
    await file.sync();
  } finally {
    await file.close();
  }
  if (options.force) {
    try {
      await rename(temporary, target);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
  }
  await chmod(target, 0o600);
}

/** The submission secret key from web.wks_key_path; throws when the file is missing or not an unprotected secret key. */
export async function loadSubmissionKey(path: string): Promise<PrivateKey> {
  const key = await readPrivateKey({ armoredKey: await readFile(path, 'utf8') });
  if (!key.isDecrypted()) throw new LacreError(`${path} holds a passphrase-protected key; Lacre needs it unprotected (lacre wks init makes one)`);
  return key;
}
