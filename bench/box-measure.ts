/**
 * The Incoming Box bench's two measurements: delivery throughput through Lacre's own delivery client
 * (HttpBoxDownstream, as `lacre serve` delivers), and listing latency over HTTP with a user token.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Agent, request } from 'node:http';
import { Readable } from 'node:stream';
import { configSchema } from '../src/config/schema.js';
import { HttpBoxDownstream } from '../src/delivery/incoming-box.js';
import { FRAMING_BYTES } from '../src/soledad/preamble.js';
import { TRUSTED_TOKEN, type BoxProcess, type BoxUser, type FilledBlobs } from './box-setup.js';
import { readCpuMs } from './children.js';
import type { Samples } from './stats.js';

export const MB = 1e6;

/** Nearest-rank percentile (p in 0–1) of unsorted values. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] ?? NaN;
}

// ---- delivery ----

export interface DeliveryLoad {
  /** Figure name part, e.g. "4k". */
  name: string;
  bodyBytes: number;
  /** Messages per measured round. */
  perRound: number;
  warmup: number;
}

export interface DeliverySettings {
  concurrency: number;
  rounds: number;
  deadline: number;
}

/** Distinct random bodies per size: they stand for ciphertext; made before the clock starts. */
const BODY_POOL = 16;

/**
 * Each load: a warm-up (not measured), then `rounds` rounds of `perRound` PUTs with `concurrency` in flight,
 * every one with a fresh blob id. Per round: messages/s, MB/s, p50/p99 of one PUT (body start → answer),
 * and the box's CPU per message. Returns how many blobs and bytes were delivered in all.
 */
export async function measureDelivery(
  box: BoxProcess,
  user: BoxUser,
  loads: readonly DeliveryLoad[],
  settings: DeliverySettings,
  samples: Samples,
  progress: (line: string) => void,
): Promise<{ blobs: number; bytes: number }> {
  const config = configSchema.parse({
    incoming_box: { url: `http://127.0.0.1:${box.port}`, token: TRUSTED_TOKEN, max_connections: settings.concurrency, timeout_seconds: 60 },
  }).incoming_box;
  const downstream = new HttpBoxDownstream(config);
  let blobs = 0;
  let bytes = 0;
  try {
    for (const load of loads) {
      const bodies = Array.from({ length: BODY_POOL }, () => randomBytes(load.bodyBytes));
      const deliver = async (count: number) => {
        const latencies = await deliverBatch(downstream, user.id, bodies, count, settings);
        blobs += count;
        bytes += count * load.bodyBytes;
        return latencies;
      };
      await deliver(load.warmup);
      for (let round = 0; round < settings.rounds; round++) {
        const cpuBefore = readCpuMs(box.pid);
        const started = performance.now();
        const latencies = await deliver(load.perRound);
        const seconds = (performance.now() - started) / 1000;
        const cpuMs = readCpuMs(box.pid) - cpuBefore;
        const prefix = `box_put_${load.name}`;
        samples.add(`${prefix}_msgs_per_s`, 'msg/s', load.perRound / seconds);
        samples.add(`${prefix}_mb_per_s`, 'MB/s', (load.perRound * load.bodyBytes) / MB / seconds);
        samples.add(`${prefix}_p50_ms`, 'ms', percentile(latencies, 0.5));
        samples.add(`${prefix}_p99_ms`, 'ms', percentile(latencies, 0.99));
        samples.add(`${prefix}_cpu_ms_per_msg`, 'ms', cpuMs / load.perRound);
        progress(`  ${load.name} round ${round + 1}/${settings.rounds}: ${(load.perRound / seconds).toFixed(0)} msg/s, p50 ${percentile(latencies, 0.5).toFixed(1)} ms`);
      }
    }
  } finally {
    downstream.close();
  }
  return { blobs, bytes };
}

/** `count` PUTs, `concurrency` at a time; the latency of each in ms. Any refusal or error fails the bench. */
async function deliverBatch(downstream: HttpBoxDownstream, user: string, bodies: readonly Buffer[], count: number, settings: DeliverySettings): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      if (Date.now() > settings.deadline) throw new Error('box bench: deadline passed during delivery');
      const body = bodies[next++ % bodies.length]!;
      const started = performance.now();
      await downstream.put(user, randomUUID(), 'openpgp', Readable.from([body]));
      latencies.push(performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: Math.min(settings.concurrency, count) }, worker));
  return latencies;
}

// ---- listing ----

export interface Listing {
  /** Figure name part. */
  name: string;
  /** Query string after `namespace=mx`. */
  query: string;
  /** Checks the parsed answer of the first (warm-up) request; `all` is the default listing's ids. */
  check(answer: unknown, all: readonly string[], filled: FilledBlobs): void;
}

interface DetailedBlob {
  id: string;
  size: number;
  created_at: string;
  state: string;
}

const ids = (answer: unknown): string[] => answer as string[];
const details = (answer: unknown): DetailedBlob[] => answer as DetailedBlob[];

function expectIds(name: string, got: readonly string[], want: readonly string[]): void {
  if (got.length !== want.length || got.some((id, i) => id !== want[i])) {
    throw new Error(`listing ${name}: got ${got.length} ids (${got.slice(0, 2).join(', ')}…), expected ${want.length} (${want.slice(0, 2).join(', ')}…)`);
  }
}

/** The listings measured on the 100 000-blob user; the first must be the default one (its ids check the others). */
export const LISTINGS: readonly Listing[] = [
  {
    name: 'all',
    query: '',
    check(answer, _all, filled) {
      const list = ids(answer);
      if (list.length !== filled.count || new Set(list).size !== filled.count) throw new Error(`default listing: ${list.length} ids, expected ${filled.count} distinct`);
    },
  },
  { name: 'limit50', query: '&limit=50', check: (answer, all) => expectIds('limit50', ids(answer), all.slice(0, 50)) },
  { name: 'page1000', query: '&limit=50&page=1000', check: (answer, all) => expectIds('page1000', ids(answer), all.slice(49_950, 50_000)) },
  { name: 'newest50', query: '&order_by=-date&limit=50', check: (answer, all) => expectIds('newest50', ids(answer), all.slice(-50).reverse()) },
  {
    name: 'count',
    query: '&only_count=1',
    check(answer, _all, filled) {
      if ((answer as { count?: number }).count !== filled.count) throw new Error(`only_count: ${JSON.stringify(answer)}, expected ${filled.count}`);
    },
  },
  {
    name: 'details50',
    query: '&details=1&limit=50',
    check(answer, all) {
      const list = details(answer);
      expectIds('details50', list.map((blob) => blob.id), all.slice(0, 50));
      if (list.some((blob, i) => blob.state !== 'PENDING' || !(blob.size > 0) || (i > 0 && blob.created_at <= list[i - 1]!.created_at))) {
        throw new Error('details50: not PENDING blobs with sizes, oldest first');
      }
    },
  },
  {
    name: 'size_limit',
    query: '&size_limit=100000',
    check(answer, all, filled) {
      const list = ids(answer);
      const positions = new Map(all.map((id, i) => [id, i]));
      if (list.length !== filled.smallCount || list.some((id, i) => i > 0 && positions.get(id)! <= positions.get(list[i - 1]!)!)) {
        throw new Error(`size_limit: ${list.length} ids, expected ${filled.smallCount}, oldest first`);
      }
    },
  },
  {
    name: 'details_all',
    query: '&details=1',
    check(answer, all) {
      const list = details(answer);
      expectIds('details_all', list.map((blob) => blob.id), all);
    },
  },
];

export interface ListingSettings {
  requests: number;
  deadline: number;
}

/**
 * Each listing: one warm-up request whose answer is checked, then `requests` requests one after the other
 * (time to the last byte of the answer; the client's JSON parsing is not counted). Recorded: every request
 * as a sample of `_p50_ms` (value = median, with min and max), the p99 as `_p99_ms`, the answer's size.
 */
export async function measureListings(box: BoxProcess, user: BoxUser, filled: FilledBlobs, settings: ListingSettings, samples: Samples, progress: (line: string) => void): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    let all: string[] = [];
    for (const listing of LISTINGS) {
      const path = `/blobs/${user.id}/?namespace=mx${listing.query}`;
      const get = () => getAnswer(agent, box.port, path, user.authorization);
      const first = await get();
      const answer: unknown = JSON.parse(first.body.toString('utf8'));
      if (listing.name === 'all') all = ids(answer);
      listing.check(answer, all, filled);
      const latencies: number[] = [];
      for (let i = 0; i < settings.requests; i++) {
        if (Date.now() > settings.deadline) throw new Error('box bench: deadline passed during the listings');
        const { ms } = await get();
        latencies.push(ms);
        samples.add(`box_list_${listing.name}_p50_ms`, 'ms', ms);
      }
      samples.add(`box_list_${listing.name}_p99_ms`, 'ms', percentile(latencies, 0.99));
      samples.add(`box_list_${listing.name}_answer_kb`, 'KB', first.body.length / 1000);
      progress(`  ${listing.name}: p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${percentile(latencies, 0.99).toFixed(1)} ms, ${first.body.length} bytes`);
    }
  } finally {
    agent.destroy();
  }
}

/** One GET; rejects unless 200. */
function getAnswer(agent: Agent, port: number, path: string, authorization: string): Promise<{ body: Buffer; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request({ host: '127.0.0.1', port, path, agent, timeout: 60_000, headers: { Authorization: authorization } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const ms = performance.now() - started;
        const body = Buffer.concat(chunks);
        if (res.statusCode !== 200) reject(new Error(`GET ${path}: ${res.statusCode} ${body.toString('utf8').slice(0, 200)}`));
        else resolve({ body, ms });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within 60 s`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * The delivery user's box after the delivery loads: every PUT stored once in MX, at its size plus Soledad's
 * framing (no silent 409).
 */
export async function checkDelivered(box: BoxProcess, user: BoxUser, expected: { blobs: number; bytes: number }): Promise<void> {
  const agent = new Agent({ keepAlive: false });
  try {
    const { body } = await getAnswer(agent, box.port, `/blobs/${user.id}/?namespace=MX&details=1`, user.authorization);
    const list = details(JSON.parse(body.toString('utf8')));
    const stored = list.reduce((sum, blob) => sum + blob.size, 0);
    const framed = expected.bytes + expected.blobs * FRAMING_BYTES;
    if (list.length !== expected.blobs || stored !== framed) {
      throw new Error(`delivery check: the box lists ${list.length} blobs, ${stored} bytes; delivered ${expected.blobs}, ${expected.bytes} bytes (${framed} framed)`);
    }
  } finally {
    agent.destroy();
  }
}
