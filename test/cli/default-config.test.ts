/**
 * With neither --config nor LACRE_CONFIG, the `lacre` command reads /etc/lacre/lacre.toml when it exists. The
 * real /etc is never written: the child runs in a private mount namespace (unshare, as root) whose /etc is an
 * overlay, and the file goes into the overlay's upper directory, gone with the namespace.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const LACRE = resolve(fileURLToPath(new URL('../../src/cli/main.js', import.meta.url)));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `script` in a private mount namespace whose /etc is an overlay onto `overlay`. */
function inPrivateEtc(overlay: string, script: string, env: NodeJS.ProcessEnv): Promise<Run> {
  const mountEtc = `mount -t overlay overlay -o lowerdir=/etc,upperdir=${overlay}/upper,workdir=${overlay}/work /etc`;
  return new Promise((done) => {
    execFile('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mountEtc} && ${script}`], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      done({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function newOverlay(dir: string, name: string): Promise<string> {
  const overlay = join(dir, name);
  await mkdir(join(overlay, 'upper'), { recursive: true });
  await mkdir(join(overlay, 'work'));
  return overlay;
}

/** No LACRE_ variable of the test runner's own reaches the child. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('LACRE_')));
}

const unavailable = await (async (): Promise<string | false> => {
  if (process.getuid?.() !== 0) return 'needs root (a private mount namespace with an overlay on /etc)';
  const dir = await mkdtemp(join(tmpdir(), 'lacre-etc-probe-'));
  try {
    const probe = await inPrivateEtc(await newOverlay(dir, 'probe'), 'true', cleanEnv());
    return probe.code === 0 ? false : `cannot overlay /etc in a mount namespace here: ${probe.stderr.trim()}`;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
})();

describe('the default configuration file /etc/lacre/lacre.toml', { skip: unavailable }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lacre-default-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const config = (dataDir: string) => `[database]\ndata_dir = "${dataDir}"\n\n[smtp]\nlisten = "127.0.0.1:10999"\n`;
  const writeDefault = (dataDir: string) => `mkdir -p /etc/lacre && printf '%s' '${config(dataDir)}' > /etc/lacre/lacre.toml`;

  it('is read when neither --config nor LACRE_CONFIG names a file', async () => {
    const dataDir = join(dir, 'from-etc');
    const realFileBefore = existsSync('/etc/lacre/lacre.toml');
    const run = await inPrivateEtc(await newOverlay(dir, 'read'), `${writeDefault(dataDir)} && cd ${dir} && node ${LACRE} check --json --create`, cleanEnv());
    assert.match(run.stderr, new RegExp(`^using embedded database ${dataDir}$`, 'm'), run.stderr);
    assert.match(run.stdout, /"listen": "127\.0\.0\.1:10999"/);
    assert.equal(existsSync('/etc/lacre/lacre.toml'), realFileBefore, 'the real /etc is untouched');
  });

  it('gives way to --config and to LACRE_CONFIG', async () => {
    const own = join(dir, 'own.toml');
    await writeFile(own, config(join(dir, 'from-own')));
    const etcData = join(dir, 'from-etc-unused');
    const withFlag = await inPrivateEtc(await newOverlay(dir, 'flag'), `${writeDefault(etcData)} && cd ${dir} && node ${LACRE} --config ${own} check --json --create`, cleanEnv());
    assert.match(withFlag.stderr, new RegExp(`^using embedded database ${join(dir, 'from-own')}$`, 'm'), withFlag.stderr);
    const withEnv = await inPrivateEtc(await newOverlay(dir, 'env'), `${writeDefault(etcData)} && cd ${dir} && node ${LACRE} check --json --create`, {
      ...cleanEnv(),
      LACRE_CONFIG: own,
    });
    assert.match(withEnv.stderr, new RegExp(`^using embedded database ${join(dir, 'from-own')}$`, 'm'), withEnv.stderr);
  });
});
