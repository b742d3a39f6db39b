/** `lacre keys import -` as a child process: an endless stdin is refused after keys.max_key_bytes, and the child exits. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { databaseBackends, databaseEnv, withDatabase } from '../helpers/databases.js';
import { LACRE_BIN } from '../helpers/lacre.js';

const CHUNK = 64 * 1024;
const TOTAL = 50 * 1024 * 1024;

interface Piped {
  code: number;
  stderr: string;
  /** Bytes the child's stdin took before it stopped reading. */
  taken: number;
}

/** Runs lacre with `total` bytes of bogus armor offered on stdin, produced only as fast as the child reads them. */
function runWithEndlessStdin(args: string[], env: NodeJS.ProcessEnv, total: number): Promise<Piped> {
  let taken = 0;
  const source = Readable.from(
    (function* () {
      for (let offered = 0; offered < total; offered += CHUNK) {
        taken += CHUNK;
        yield Buffer.alloc(CHUNK, 'A');
      }
    })(),
  );
  const child = spawn(process.execPath, [LACRE_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.on('error', () => undefined); // EPIPE once the child stops reading
  source.pipe(child.stdin);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      source.destroy();
      resolve({ code: code ?? -1, stderr, taken });
    });
  });
}

for (const backend of await databaseBackends()) {
  describe(`lacre keys import - (child process, ${backend.name})`, () => {
    it('refuses 50 MB on stdin once past keys.max_key_bytes, without reading the rest, and exits', () =>
      withDatabase(backend, async (db, database) => {
        await db.close(); // the child opens the database itself
        const result = await runWithEndlessStdin(['keys', 'import', '-'], databaseEnv(database), TOTAL);
        assert.equal(result.code, 1, result.stderr);
        assert.match(result.stderr, /^refused stdin: larger than keys\.max_key_bytes \(1 MiB\); nothing was imported$/m);
        assert.ok(result.taken < TOTAL / 4, `the child took ${result.taken} of ${TOTAL} bytes`);
      }));
  });
}
