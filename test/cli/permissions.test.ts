/**
 * Under a 022 umask, what `lacre serve` creates (embedded database, spool, Incoming Box store) is private
 * to its user: directories 0700, files 0600. A directory other users can write in is refused at start.
 */
import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LacreServer, runLacre } from '../helpers/lacre.js';

/** Children inherit it: the umask of the admin's shell in the issue. */
process.umask(0o022);

const boxEnv = { LACRE_INCOMING_BOX_SERVE: 'true', LACRE_INCOMING_BOX_LISTEN: '127.0.0.1:0', LACRE_HTTP_ENABLED: 'false' };

/** What `lacre serve` said when it refused to start; 'started' if it did start (then it is stopped again). */
function serveRefusal(env: NodeJS.ProcessEnv, cwd: string): Promise<string> {
  return LacreServer.start(env, { cwd }).then(
    async (server) => {
      await server.stop();
      return 'started';
    },
    (error: Error) => error.message,
  );
}

/** Every entry below `root` (symbolic links left out) whose mode lets group or others in, with that mode. */
async function notPrivate(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(root, { recursive: true })) {
    const stats = await lstat(join(root, name));
    if (stats.isSymbolicLink() || (stats.mode & 0o077) === 0) continue;
    found.push(`${name} ${(stats.mode & 0o777).toString(8)}`);
  }
  return found;
}

describe('file modes under umask 022', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lacre-modes-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('lacre serve creates the data directory, the spool and the box store 0700, with files 0600', async () => {
    const work = join(dir, 'fresh');
    await mkdir(work);
    const env = { ...boxEnv, LACRE_ENCRYPTION_SPOOL_DIR: join(work, 'spool') };
    const server = await LacreServer.start(env, { cwd: work });
    assert.equal(await server.stop(), 0);
    for (const created of ['data', 'data/blobs', 'spool']) {
      assert.equal((await lstat(join(work, created))).mode & 0o777, 0o700, created);
    }
    const files = await readdir(join(work, 'data'), { recursive: true });
    assert.ok(files.length > 100, 'PGlite wrote its files');
    assert.deepEqual(await notPrivate(work), []);
  });

  it('refuses a data directory other users can write, saying how to fix it', async () => {
    const work = join(dir, 'open-data');
    await mkdir(join(work, 'data'), { recursive: true });
    await chmod(join(work, 'data'), 0o777);
    const refusal = await serveRefusal(boxEnv, work);
    assert.match(refusal, /exited 1: lacre: database\.data_dir .*\/open-data\/data is mode 0777.*chmod 700 \/.*\/open-data\/data/);
  });

  it('refuses a data directory others can enter that holds a file they can write (an install from before)', async () => {
    const work = join(dir, 'old-install');
    await mkdir(join(work, 'data', 'base'), { recursive: true, mode: 0o755 });
    await writeFile(join(work, 'data', 'base', '1259'), '', { mode: 0o666 });
    await chmod(join(work, 'data', 'base', '1259'), 0o666);
    const result = await runLacre(['migrate'], { LACRE_DATABASE_DATA_DIR: join(work, 'data') });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /database\.data_dir .*\/old-install\/data holds .*\/data\/base\/1259, mode 0666.*chmod 700 /);
  });

  it('refuses a spool directory or a box store other users can write', async () => {
    for (const [setting, variable] of [['encryption.spool_dir', 'LACRE_ENCRYPTION_SPOOL_DIR'], ['incoming_box.blobs_path', 'LACRE_INCOMING_BOX_BLOBS_PATH']] as const) {
      const work = join(dir, `open-${variable}`);
      await mkdir(join(work, 'shared'), { recursive: true });
      await chmod(join(work, 'shared'), 0o1777);
      const refusal = await serveRefusal({ ...boxEnv, [variable]: join(work, 'shared') }, work);
      assert.match(refusal, new RegExp(`exited 1: lacre: ${setting.replace('.', '\\.')} .*/shared is mode 01777.*chmod 700 `));
    }
  });
});
