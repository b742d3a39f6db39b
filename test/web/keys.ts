/** Keys users upload, made by gpg (so gpg can decrypt what Lacre mails to them) and openpgp.js where gpg cannot. */
import { generateKey as generateOpenpgpKey } from 'openpgp';
import { exportPublicKey, gpgOk, type GpgHome } from '../helpers/gpg.js';

const NO_PASSPHRASE = ['--batch', '--pinentry-mode', 'loopback', '--passphrase', ''];

/** A key of old algorithms: `primary` certifies and signs, `subkey` encrypts (e.g. rsa1024/rsa1024, dsa2048/elg2048). */
export async function gpgKeyOf(home: GpgHome, email: string, primary: string, subkey: string): Promise<{ fingerprint: string; publicArmored: string }> {
  const generated = await gpgOk(home, [...NO_PASSPHRASE, '--status-fd', '1', '--yes', '--quick-gen-key', `${email.split('@')[0]} <${email}>`, primary, 'cert,sign', '1y']);
  const fingerprint = /KEY_CREATED \w (\w+)/.exec(generated.toString())![1]!;
  await gpgOk(home, [...NO_PASSPHRASE, '--quick-add-key', fingerprint, subkey, 'encr', '1y']);
  return { fingerprint, publicArmored: await exportPublicKey(home, fingerprint) };
}

/** A v4 key with several user IDs (openpgp.js: gpg 2.2 needs one --quick-add-uid per ID). */
export async function keyWithAddresses(emails: string[]): Promise<string> {
  const { publicKey } = await generateOpenpgpKey({ userIDs: emails.map((email) => ({ email })), format: 'armored' });
  return publicKey;
}

/** A version 6 key, which Lacre refuses (GnuPG 2.2 cannot read mail encrypted to it). */
export async function v6Key(email: string): Promise<string> {
  const { publicKey } = await generateOpenpgpKey({ type: 'curve25519', userIDs: [{ email }], format: 'armored', config: { v6Keys: true } });
  return publicKey;
}
