/**
 * What the Incoming Box bench (bench/box.ts) runs against: a fresh database, `lacre inbox serve` as a child
 * process, box users made with the CLI, and 100 000 blob rows written straight into lacre_blobs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../src/db/open.js';
import { isUserId } from '../src/box/users.js';
import { LACRE_BIN } from '../test/helpers/lacre.js';
import { freePort, track } from './children.js';
import { adminQuery, SERVER_URL, serverAnswers } from './setup.js';

/** The one Trusted Application credential the box accepts. */
export const TRUSTED_TOKEN = 'bench:secret';


/** The box's database and blob folder; remove() drops the database and deletes the temp folder. */
export interface BoxBenchStore {
  kind: 'postgres' | 'embedded';
  /** LACRE_* variables naming the database, for every `lacre` child. */
  env: Record<string, string>;
  /** The PostgreSQL URL, or undefined for the embedded PGlite in `dataDir`. */
  url: string | undefined;
  dataDir: string;
  blobsPath: string;
  remove(): Promise<void>;
}

/**
 * A fresh `lacre_boxbench_<hex>` database migrated with `lacre migrate` when 127.0.0.1:5432 answers (and
 * `embedded` is not asked for), else an embedded PGlite data dir (the CLI migrates it on first use).
 * `register` gets the removal as soon as there is something to remove (the last one registered removes all),
 * so a failure or Ctrl-C at any point leaves nothing behind.
 */
export async function createBoxStore(options: { embedded: boolean; register: (remove: () => Promise<void>) => void }): Promise<BoxBenchStore> {
  const scratch = await mkdtemp(join(tmpdir(), 'lacre-boxbench-'));
  const dataDir = join(scratch, 'data');
  const blobsPath = join(scratch, 'blobs');
  const removeScratch = () => rm(scratch, { recursive: true, force: true });
  if (options.embedded || !(await serverAnswers())) {
    options.register(removeScratch);
    return { kind: 'embedded', env: { LACRE_DATABASE_DATA_DIR: dataDir }, url: undefined, dataDir, blobsPath, remove: removeScratch };
  }
  const name = `lacre_boxbench_${randomBytes(6).toString('hex')}`;
  options.register(removeScratch);
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = new URL(SERVER_URL);
  url.pathname = `/${name}`;
  const store: BoxBenchStore = {
    kind: 'postgres',
    env: { LACRE_DATABASE_URL: url.toString() },
    url: url.toString(),
    dataDir,
    blobsPath,
    async remove() {
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await removeScratch();
    },
  };
  options.register(() => store.remove());
  await lacreCommand(['migrate'], store.env);
  return store;
}

/** Runs one `lacre` command to completion (killed after `timeoutMs`); its stdout, or an error with its stderr. */
export function lacreCommand(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(process.execPath, [LACRE_BIN, ...args], { env: { ...process.env, LACRE_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => (clearTimeout(timer), reject(error)));
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`lacre ${args.join(' ')} ${signal ? `killed by ${signal}` : `exited ${code}`}: ${stderr.trim()}`));
    });
  });
}

export interface BoxUser {
  address: string;
  id: string;
  /** `Authorization` header value for /blobs/{id}/…: Token base64("id:token"). */
  authorization: string;
}

/** `lacre inbox user add` then `lacre inbox token create`, as an operator would. */
export async function createBoxUser(store: BoxBenchStore, address: string): Promise<BoxUser> {
  const id = (await lacreCommand(['inbox', 'user', 'add', address], store.env)).trim();
  if (!isUserId(id)) throw new Error(`lacre inbox user add printed "${id}", not a user id`);
  const token = (await lacreCommand(['inbox', 'token', 'create', id], store.env)).trim();
  if (token === '') throw new Error('lacre inbox token create printed no token');
  return { address, id, authorization: `Token ${Buffer.from(`${id}:${token}`).toString('base64')}` };
}

/** What the bulk fill wrote, for checking the listings against. */
export interface FilledBlobs {
  count: number;
  /** Blobs of at most `smallSize` bytes (what `size_limit=smallSize` lists). */
  smallSize: number;
  smallCount: number;
  totalBytes: number;
}

/**
 * Writes `count` PENDING blob rows for `user` in namespace mx straight into lacre_blobs: ids are UUIDs (md5
 * of the index, so unrelated to arrival order), sizes spread evenly over 1 KB–2 MB, arrivals 20 s apart
 * ending now. lacre_box_usage (the quota's running total, kept by a per-row trigger) is set once from the rows
 * instead: the trigger would update that one row 100 000 times in one transaction, and each update walks the
 * row's growing chain of versions (over a minute on PostgreSQL instead of about a second). Checked below. No blob files:
 * a listing reads only lacre_blobs, and the box's start-up sweep only goes from files to rows (it deletes
 * files no row names), never the other way. Must run while no box holds an embedded database.
 */
export async function fillBlobs(store: BoxBenchStore, user: string, count: number): Promise<FilledBlobs> {
  if (!isUserId(user) || !Number.isInteger(count) || count <= 0) throw new Error(`bad fill: user ${user}, count ${count}`);
  const smallSize = 100_000;
  const db = await openDatabase({ url: store.url, data_dir: store.dataDir, pool_size: 2, query_timeout_seconds: 10 });
  try {
    const id = `md5('lacre-box-bench-' || n)::uuid::text`;
    await db.execTransaction(`
      SET LOCAL session_replication_role = replica;
      INSERT INTO lacre_blobs (user_uuid, namespace, blob_id, size, scheme, state, file_name, created_at)
        SELECT '${user}'::uuid, 'mx', ${id}, 1000 + (n * 7919) % 2000000, 'openpgp', 'PENDING', ${id} || '.bench',
               now() - make_interval(secs => (${count} - n) * 20)
          FROM generate_series(0, ${count - 1}) AS n;
      INSERT INTO lacre_box_usage (user_uuid, used_bytes)
        SELECT '${user}'::uuid, sum(size) FROM lacre_blobs WHERE user_uuid = '${user}'::uuid
        ON CONFLICT (user_uuid) DO UPDATE SET used_bytes = excluded.used_bytes;
      ANALYZE lacre_blobs;
      ANALYZE lacre_box_usage;
    `);
    const [row] = await db.query<{ n: number; small: number; total: number | string; used: number | string | null }>(
      `SELECT count(*)::int AS n, (count(*) FILTER (WHERE size <= $2))::int AS small, sum(size)::bigint AS total,
              (SELECT used_bytes FROM lacre_box_usage WHERE user_uuid = $1) AS used
         FROM lacre_blobs WHERE user_uuid = $1 AND namespace = 'mx' AND state = 'PENDING'`,
      [user, smallSize],
    );
    const filled = { count: Number(row?.n), smallSize, smallCount: Number(row?.small), totalBytes: Number(row?.total) };
    if (filled.count !== count) throw new Error(`fill: expected ${count} blob rows, found ${filled.count}`);
    if (Number(row?.used) !== filled.totalBytes) throw new Error(`fill: lacre_box_usage says ${row?.used} bytes, the rows ${filled.totalBytes}`);
    return filled;
  } finally {
    await db.close();
  }
}

/** A running `lacre inbox serve`. */
export interface BoxProcess {
  readonly port: number;
  readonly pid: number;
  /** The last few KB it wrote (JSON log lines at LACRE_LOG_LEVEL=warn and above, or a crash). */
  output(): string;
  /** SIGTERM (a clean shutdown), SIGKILL after `graceMs`; resolves with the exit code (-1 if killed). */
  stop(graceMs?: number): Promise<number>;
}

/**
 * Starts `lacre inbox serve` on a free 127.0.0.1 port, without a quota, and waits until it answers HTTP
 * (at log level warn its "ready" line is not written).
 */
export async function startBox(store: BoxBenchStore, timeoutMs = 60_000): Promise<BoxProcess> {
  const port = await freePort();
  const env = {
    ...store.env,
    LACRE_INCOMING_BOX_LISTEN: `127.0.0.1:${port}`,
    LACRE_INCOMING_BOX_BLOBS_PATH: store.blobsPath,
    LACRE_INCOMING_BOX_TRUSTED_TOKENS: TRUSTED_TOKEN,
    LACRE_INCOMING_BOX_QUOTA: '0',
    LACRE_LOG_LEVEL: 'warn',
  };
  const child = track(spawn(process.execPath, [LACRE_BIN, 'inbox', 'serve'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  const keep = (chunk: string) => (output = (output + chunk).slice(-8000));
  child.stdout!.setEncoding('utf8').on('data', keep);
  child.stderr!.setEncoding('utf8').on('data', keep);
  const box: BoxProcess = { port, pid: child.pid!, output: () => output, stop: (graceMs = 15_000) => stopChild(child, graceMs) };
  const deadline = Date.now() + timeoutMs;
  while (!(await answers(port))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`lacre inbox serve exited ${child.exitCode ?? child.signalCode}: ${output.trim()}`);
    if (Date.now() > deadline) {
      await box.stop(1_000);
      throw new Error(`lacre inbox serve did not answer on ${port} within ${timeoutMs} ms: ${output.trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return box;
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<number> {
  if (child.exitCode !== null) return child.exitCode;
  if (child.signalCode !== null) return -1;
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

/** Any HTTP answer (the box says 404 to GET /) means it is listening. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'GET', timeout: 2_000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}





