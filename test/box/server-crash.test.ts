/**
 * The box as a child process (`lacre inbox serve`), killed with SIGKILL while large deliveries stream in:
 * after a restart no partial blob is listed and no temporary file is left, and redelivery stores each
 * blob exactly once with the right bytes.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BoxUserStore } from '../../src/box/users.js';
import { FRAMING_BYTES } from '../../src/soledad/preamble.js';
import { databaseBackends, databaseEnv, withDatabase } from '../helpers/databases.js';
import { LACRE_BIN } from '../helpers/lacre.js';
import { sleep, tokenHeader, TRUSTED, trustedAuth } from './server-box.js';

const MIB = 1024 * 1024;

/** A large blob generated chunk by chunk (1 MiB each, numbered, so no two chunks are equal). */
class BigBlob {
  readonly sha256: string;
  readonly size: number;
  readonly #base = randomBytes(MIB);

  constructor(
    readonly id: string,
    private readonly chunks: number,
    private readonly tail: number,
  ) {
    const hash = createHash('sha256');
    for (const chunk of this.pieces()) hash.update(chunk);
    this.sha256 = hash.digest('hex');
    this.size = chunks * MIB + tail;
  }

  *pieces(): Generator<Buffer> {
    for (let index = 0; index < this.chunks; index++) {
      const chunk = Buffer.from(this.#base);
      chunk.writeUInt32BE(index, 0);
      yield chunk;
    }
    yield this.#base.subarray(0, this.tail);
  }
}

interface Upload {
  id: string;
  sent(): number;
  /** The status, or the error when the connection broke. */
  result: Promise<number | Error>;
}

/** Streams a blob to /incoming with Content-Length, pausing `pauseMs` after each chunk. */
function upload(base: string, user: string, blob: BigBlob, pauseMs: number): Upload {
  let sent = 0;
  const request = httpRequest(`${base}/incoming/${user}/${blob.id}`, {
    method: 'PUT',
    headers: { authorization: trustedAuth, 'content-length': String(blob.size), 'x-incoming-scheme': 'openpgp' },
  });
  const result = new Promise<number | Error>((resolve) => {
    request.on('response', (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
      response.on('error', resolve);
    });
    request.on('error', resolve);
  });
  void (async () => {
    try {
      for (const chunk of blob.pieces()) {
        if (request.destroyed) return;
        if (!request.write(chunk)) await drainedOrClosed(request);
        sent += chunk.length;
        if (pauseMs > 0) await sleep(pauseMs);
      }
      request.end();
    } catch {
      // The box went away: `result` has the error.
    }
  })();
  return { id: blob.id, sent: () => sent, result };
}

function drainedOrClosed(request: ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      request.off('drain', done);
      request.off('close', done);
      resolve();
    };
    request.on('drain', done);
    request.on('close', done);
  });
}

/** `lacre inbox serve` as a child process. */
class BoxProcess {
  port = 0;
  stderr = '';
  readonly exited: Promise<number | null>;

  private constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
  }

  static async start(env: Record<string, string>): Promise<BoxProcess> {
    const child = spawn(process.execPath, [LACRE_BIN, 'inbox', 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const box = new BoxProcess(child);
    box.port = await new Promise<number>((resolve, reject) => {
      let pending = '';
      const timer = setTimeout(() => reject(new Error(`box not ready in 60 s: ${box.stderr}`)), 60_000);
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        pending += chunk;
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const line of lines) {
          const entry = JSON.parse(line) as { msg?: string; listen?: string };
          if (entry.msg === 'incoming box is ready') {
            clearTimeout(timer);
            resolve(Number(entry.listen!.split(':').pop()));
          }
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`box exited ${code}: ${box.stderr}`));
      });
    });
    return box;
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<number | null> {
    this.child.kill('SIGTERM');
    return this.exited;
  }
}

for (const backend of await databaseBackends()) {
  describe(`Incoming Box crash (${backend.name})`, () => {
    it('a SIGKILL during large uploads leaves no partial blob and no temporary file; redelivery stores each once', { timeout: 240_000 }, () =>
      withDatabase(backend, async (db, dbConfig) => {
        const users = new BoxUserStore(db);
        const { user } = await users.add('crash@example.org');
        const { token } = await users.createToken(user);
        await db.close(); // the embedded database allows one process at a time: the child's
        const auth = tokenHeader(user, token);
        const blobsPath = mkdtempSync(join(tmpdir(), 'lacre-box-crash-'));
        const env = {
          ...databaseEnv(dbConfig),
          LACRE_INCOMING_BOX_LISTEN: '127.0.0.1:0',
          LACRE_INCOMING_BOX_BLOBS_PATH: blobsPath,
          LACRE_INCOMING_BOX_TRUSTED_TOKENS: TRUSTED,
          LACRE_INCOMING_BOX_QUOTA: '0',
          LACRE_LOG_LEVEL: 'info',
        };
        const tempDir = join(blobsPath, '.tmp');
        const userDir = join(blobsPath, user, 'MX');
        const blobs = [new BigBlob('big-1', 24, 12_345), new BigBlob('big-2', 30, 1), new BigBlob('big-3', 20, 99_999), new BigBlob('big-4', 26, 0)];
        const small = new BigBlob('small', 0, 4096);
        let box = await BoxProcess.start(env);
        try {
          assert.equal(await upload(box.base, user, small, 0).result, 200);
          const uploads = blobs.map((blob) => upload(box.base, user, blob, 15));
          const deadline = Date.now() + 30_000;
          while (!(uploads.every((u) => u.sent() >= 6 * MIB) && readdirSync(tempDir).length >= blobs.length)) {
            assert.ok(Date.now() < deadline, 'uploads did not get going');
            await sleep(5);
          }
          assert.ok(uploads.every((u, index) => u.sent() < blobs[index]!.size), 'every upload is still in flight');
          await box.kill();
          const results = await Promise.all(uploads.map((u) => u.result));
          assert.ok(results.every((r) => r instanceof Error), `no upload was answered: ${results.join(', ')}`);
          assert.ok(readdirSync(tempDir).length >= blobs.length, 'the crash left temporary files behind');

          // An object stored but never recorded (a crash between the two) is swept at start; what is not a blob is not.
          writeFileSync(join(userDir, 'stored-never-recorded'), 'orphan');
          writeFileSync(join(userDir, '.keep'), 'not a blob');
          mkdirSync(join(blobsPath, '.snapshot', 'MX'), { recursive: true });
          writeFileSync(join(blobsPath, '.snapshot', 'MX', 'x'), 'not a user');
          box = await BoxProcess.start(env);
          assert.deepEqual(readdirSync(tempDir), [], 'temporary files are removed at start');
          const listed = await fetch(`${box.base}/blobs/${user}/?namespace=MX`, { headers: { authorization: auth } });
          assert.deepEqual(await listed.json(), ['small'], 'no partial blob is listed');
          const left = readdirSync(userDir).sort();
          assert.equal(left.length, 2, `the orphan is swept: ${left.join(', ')}`);
          assert.equal(left[0], '.keep', 'the dot file is kept');
          assert.match(left[1]!, /^small\./);
          assert.deepEqual(readdirSync(join(blobsPath, '.snapshot', 'MX')), ['x']);

          const redelivered = await Promise.all([...blobs, small].map((blob) => upload(box.base, user, blob, 0).result));
          assert.deepEqual(redelivered, [200, 200, 200, 200, 409]);
          const all = (await (await fetch(`${box.base}/blobs/${user}/?namespace=MX&details=1`, { headers: { authorization: auth } })).json()) as { id: string; size: number }[];
          assert.deepEqual(all.map((b) => b.id).sort(), ['big-1', 'big-2', 'big-3', 'big-4', 'small']);
          for (const blob of [...blobs, small]) {
            assert.equal(all.find((b) => b.id === blob.id)!.size, FRAMING_BYTES + blob.size);
            const response = await fetch(`${box.base}/blobs/${user}/${blob.id}?namespace=MX`, { headers: { authorization: auth } });
            const hash = createHash('sha256');
            let framing = FRAMING_BYTES;
            for await (const chunk of response.body!) {
              hash.update(chunk.subarray(framing));
              framing = Math.max(0, framing - chunk.length);
            }
            assert.equal(hash.digest('hex'), blob.sha256, `${blob.id} has exactly the bytes delivered, after the framing`);
          }
          assert.equal(readdirSync(userDir).filter((name) => !name.startsWith('.')).length, 5, 'one file per blob');
          assert.deepEqual(readdirSync(tempDir), []);
          assert.equal(await box.stop(), 0, 'SIGTERM stops the box cleanly');
        } finally {
          await box.kill().catch(() => undefined);
          rmSync(blobsPath, { recursive: true, force: true });
        }
      }),
    );
  });
}
