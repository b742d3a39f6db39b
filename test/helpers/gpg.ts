/**
 * Real GnuPG for tests: throw-away homes, keys made by `gpg` itself (so they are exactly what users upload),
 * and decryption / packet listing to check what Lacre produced.
 *
 * Typical use:
 *   const home = await createGpgHome();
 *   after(() => home.remove());
 *   const alice = await generateKey(home, { email: 'alice@example.org' });
 *   ... encrypt to alice.publicArmored ...
 *   assert.deepEqual(await decrypt(home, ciphertext), plaintext);
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface GpgHome {
  readonly dir: string;
  /** Stops this home's gpg-agent and deletes the directory. */
  remove(): Promise<void>;
}

export type GpgKeyAlgo = 'cv25519' | 'rsa3072' | 'nistp256' | 'nistp521';

/** gpg's algorithm names for the primary (cert, sign) key and the encryption subkey of each kind. */
const GPG_ALGORITHMS: Record<GpgKeyAlgo, [primary: string, subkey: string]> = {
  cv25519: ['ed25519', 'cv25519'],
  rsa3072: ['rsa3072', 'rsa3072'],
  nistp256: ['nistp256', 'nistp256'],
  nistp521: ['nistp521', 'nistp521'],
};

export interface GenerateKeyOptions {
  email: string;
  /** Real name part of the user ID; defaults to the local part of the address. */
  name?: string;
  /** 'cv25519' (ed25519 primary + cv25519 encryption subkey, the default), 'rsa3072' (RSA + RSA subkey) or ECDSA + ECDH on a NIST curve. */
  algo?: GpgKeyAlgo;
  /** gpg expiry for primary key and subkey: '1y', '2d', 'seconds=5', 'never'. Default '1y'. */
  expire?: string;
  /** No encryption subkey: a key that can only certify/sign. */
  signOnly?: boolean;
  /** Generate as if the clock showed this time (gpg --faked-system-time), e.g. to make an already-expired key. */
  createdAt?: Date;
}

export interface GpgKey {
  /** Primary key fingerprint, upper-case hex. */
  fingerprint: string;
  /** Key ID (16 hex digits, upper case) of the encryption subkey; what PKESK packets name. Null for sign-only keys. */
  encryptionKeyId: string | null;
  publicArmored: string;
  secretArmored: string;
  /** The revocation certificate gpg made at generation, ready to import (see revokeKey). */
  revocationCertificate: string;
}

export interface GpgResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

const GPG = '/usr/bin/gpg';
const NO_PASSPHRASE = ['--batch', '--pinentry-mode', 'loopback', '--passphrase', ''];

export async function createGpgHome(): Promise<GpgHome> {
  const dir = await mkdtemp(join(tmpdir(), 'lacre-gpg-'));
  await chmod(dir, 0o700);
  return {
    dir,
    async remove() {
      await runProcess('gpgconf', ['--homedir', dir, '--kill', 'all']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Runs gpg in this home; resolves with exit code and output whatever the exit code. */
export function runGpg(home: GpgHome, args: string[], input?: Buffer | string): Promise<GpgResult> {
  return runProcess(GPG, ['--homedir', home.dir, '--no-tty', ...args], input);
}

/** Runs gpg and rejects (with gpg's stderr in the message) unless it exits 0. */
export async function gpgOk(home: GpgHome, args: string[], input?: Buffer | string): Promise<Buffer> {
  const result = await runGpg(home, args, input);
  if (result.code !== 0) throw new Error(`gpg ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
  return result.stdout;
}

// RSA generation is the slow kind; keep one per (address, expiry) for the whole test process.
const rsaKeyCache = new Map<string, Promise<GpgKey>>();

export async function generateKey(home: GpgHome, options: GenerateKeyOptions): Promise<GpgKey> {
  const algo = options.algo ?? 'cv25519';
  if (algo === 'rsa3072' && options.createdAt === undefined) {
    const cacheKey = JSON.stringify([algo, options.email, options.name, options.expire, options.signOnly]);
    let cached = rsaKeyCache.get(cacheKey);
    if (cached === undefined) {
      cached = generateInScratchHome(options);
      rsaKeyCache.set(cacheKey, cached);
    }
    const key = await cached;
    await importKey(home, key.secretArmored);
    return key;
  }
  return generateInHome(home, options);
}

async function generateInScratchHome(options: GenerateKeyOptions): Promise<GpgKey> {
  const scratch = await createGpgHome();
  try {
    return await generateInHome(scratch, options);
  } finally {
    await scratch.remove();
  }
}

async function generateInHome(home: GpgHome, options: GenerateKeyOptions): Promise<GpgKey> {
  const algo = options.algo ?? 'cv25519';
  const expire = options.expire ?? '1y';
  const clock = options.createdAt ? ['--faked-system-time', `${gpgTimestamp(options.createdAt)}!`] : [];
  const userId = `${options.name ?? options.email.split('@')[0]} <${options.email}>`;
  const [primaryAlgo, subkeyAlgo] = GPG_ALGORITHMS[algo];

  const generated = await runGpg(home, [...NO_PASSPHRASE, ...clock, '--status-fd', '2', '--yes', '--quick-gen-key', userId, primaryAlgo, 'cert,sign', expire]);
  const fingerprint = /KEY_CREATED \w (\w+)/.exec(generated.stderr)?.[1];
  if (generated.code !== 0 || fingerprint === undefined) throw new Error(`gpg --quick-gen-key failed: ${generated.stderr.trim()}`);
  if (!options.signOnly) await gpgOk(home, [...NO_PASSPHRASE, ...clock, '--quick-add-key', fingerprint, subkeyAlgo, 'encr', expire]);

  return {
    fingerprint,
    encryptionKeyId: options.signOnly ? null : await encryptionSubkeyId(home, fingerprint),
    publicArmored: await exportPublicKey(home, fingerprint),
    secretArmored: (await gpgOk(home, [...NO_PASSPHRASE, '--armor', '--export-secret-keys', fingerprint])).toString('utf8'),
    revocationCertificate: await readRevocationCertificate(home, fingerprint),
  };
}

/** A key whose primary key and subkey expired long ago (generated in 2020 with a one-day lifetime). */
export function generateExpiredKey(home: GpgHome, options: Omit<GenerateKeyOptions, 'createdAt' | 'expire'>): Promise<GpgKey> {
  return generateKey(home, { ...options, expire: '1d', createdAt: new Date('2020-01-01T00:00:00Z') });
}

/** Imports the key's revocation certificate into this home; returns the now revoked public key, armored. */
export async function revokeKey(home: GpgHome, key: GpgKey): Promise<string> {
  await importKey(home, key.revocationCertificate);
  return exportPublicKey(home, key.fingerprint);
}

async function readRevocationCertificate(home: GpgHome, fingerprint: string): Promise<string> {
  const certificate = await readFile(join(home.dir, 'openpgp-revocs.d', `${fingerprint}.rev`), 'utf8');
  // gpg prefixes the armor line with ':' so the file cannot be imported by accident.
  return certificate.replace(/^:-----BEGIN/m, '-----BEGIN');
}

export async function importKey(home: GpgHome, armored: string): Promise<void> {
  await gpgOk(home, [...NO_PASSPHRASE, '--import'], armored);
}

export async function exportPublicKey(home: GpgHome, fingerprint: string): Promise<string> {
  return (await gpgOk(home, ['--armor', '--export', fingerprint])).toString('utf8');
}

/** Decrypts with the secret keys in this home; resolves with the plaintext bytes exactly as gpg wrote them. */
export async function decrypt(home: GpgHome, data: Buffer | string): Promise<Buffer> {
  return gpgOk(home, [...NO_PASSPHRASE, '--decrypt'], data);
}

/**
 * Key IDs (16 hex digits, upper case) named by the public-key encrypted session key packets of a message,
 * in packet order; '0000000000000000' for a hidden recipient. Does not decrypt. Proves who a copy was encrypted to.
 */
export async function listPacketsKeyIds(home: GpgHome, data: Buffer | string): Promise<string[]> {
  const result = await runGpg(home, ['--list-only', '--list-packets'], data);
  const keyIds = [...result.stdout.toString('utf8').matchAll(/^:pubkey enc packet: .*keyid ([0-9A-Fa-f]{16})/gm)].map((m) => m[1]!.toUpperCase());
  if (keyIds.length === 0 && result.code !== 0) throw new Error(`gpg --list-packets exited ${result.code}: ${result.stderr.trim()}`);
  return keyIds;
}

async function encryptionSubkeyId(home: GpgHome, fingerprint: string): Promise<string | null> {
  const listing = (await gpgOk(home, ['--with-colons', '--list-keys', fingerprint])).toString('utf8');
  for (const line of listing.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === 'sub' && fields[11]?.includes('e')) return fields[4]!.toUpperCase();
  }
  return null;
}

function gpgTimestamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '');
}

function runProcess(command: string, args: string[], input?: Buffer | string): Promise<GpgResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString('utf8') }));
    // gpg may exit before reading all input (e.g. on a parse error); that is reported through the exit code.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** Encrypts to these recipients' keys (in this home) as a user's mail client would: armored, MDC, no trust questions. */
export async function encryptWithGpg(home: GpgHome, recipients: readonly string[], data: Buffer | string): Promise<Buffer> {
  const to = recipients.flatMap((recipient) => ['--recipient', recipient]);
  return gpgOk(home, ['--batch', '--trust-model', 'always', '--armor', '--encrypt', ...to], data);
}
