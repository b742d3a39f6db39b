/**
 * Real S/MIME from the openssl command (installed on Debian): a throw-away certificate, and messages
 * enveloped (EnvelopedData, or AuthEnvelopedData with AES-GCM) or only signed, as `openssl cms` writes them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SmimeIdentity {
  readonly certificate: string;
  readonly privateKey: string;
  remove(): Promise<void>;
}

export async function opensslAvailable(): Promise<boolean> {
  return new Promise((resolve) => execFile('openssl', ['version'], (error) => resolve(!error)));
}

function openssl(args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile('openssl', args, { encoding: 'buffer', maxBuffer: 64 << 20 }, (error, stdout, stderr) =>
      error ? reject(new Error(`openssl ${args[0]}: ${stderr.toString()}`)) : resolve(stdout),
    );
    child.stdin!.end(input);
  });
}

export async function createSmimeIdentity(email: string): Promise<SmimeIdentity> {
  const dir = await mkdtemp(join(tmpdir(), 'lacre-smime-'));
  const certificate = join(dir, 'cert.pem');
  const privateKey = join(dir, 'key.pem');
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', privateKey, '-out', certificate, '-subj', `/CN=${email}`, '-days', '30'], Buffer.alloc(0));
  return { certificate, privateKey, remove: () => rm(dir, { recursive: true, force: true }) };
}

export type SmimeForm = 'enveloped' | 'auth-enveloped' | 'signed';

/**
 * `entity` (a MIME entity: its header lines, a blank line, its body) as an S/MIME message from openssl:
 * its own MIME header (Content-Type application/pkcs7-mime, base64) and body, LF line ends turned to CRLF.
 */
export async function smimeMessage(identity: SmimeIdentity, form: SmimeForm, entity: Buffer): Promise<Buffer> {
  const args =
    form === 'signed'
      ? ['cms', '-sign', '-nodetach', '-signer', identity.certificate, '-inkey', identity.privateKey, '-outform', 'SMIME']
      : ['cms', '-encrypt', form === 'enveloped' ? '-aes256' : '-aes-256-gcm', '-outform', 'SMIME', identity.certificate];
  const out = await openssl(args, entity);
  return Buffer.from(out.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}

/** The same, as DER bytes (no MIME around them). */
export async function smimeDer(identity: SmimeIdentity, form: SmimeForm, entity: Buffer): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'lacre-smime-'));
  try {
    const file = join(dir, 'in');
    await writeFile(file, entity);
    const args =
      form === 'signed'
        ? ['cms', '-sign', '-nodetach', '-binary', '-signer', identity.certificate, '-inkey', identity.privateKey, '-in', file, '-outform', 'DER']
        : ['cms', '-encrypt', '-binary', form === 'enveloped' ? '-aes256' : '-aes-256-gcm', '-in', file, '-outform', 'DER', identity.certificate];
    return await openssl(args, Buffer.alloc(0));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
