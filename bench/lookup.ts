/**
 * Key lookup cost with a large store: Lacre's own cached key directory (src/keys/directory.ts, the code that
 * answers at RCPT time) over a real PostgreSQL database filled with `storeSize` addresses (setup.ts fillKeyStore).
 */
import { createKeyDirectory, type CachedKeyDirectory } from '../src/keys/directory.js';
import { createLogger } from '../src/log/logger.js';
import type { RecipientKeys } from '../src/keys/types.js';
import { bulkAddress, withDatabase, type BenchDatabase } from './setup.js';
import type { Samples } from './stats.js';

export interface LookupSettings {
  storeSize: number;
  rounds: number;
  /** Distinct addresses per round and kind of lookup (never repeated across rounds: each is a cold lookup). */
  lookupsPerRound: number;
  /** Lookups in flight at once for the concurrent cold figure (what many SMTP sessions at RCPT time do). */
  concurrency: number;
  /** Times the cold addresses are looked up again, from the cache, per round. */
  warmPasses: number;
  deadline: number;
}

/** A step coprime with the store size walks every address once, in an order with no locality. */
const STRIDE = 7919;

export async function measureKeyLookups(database: BenchDatabase, settings: LookupSettings, samples: Samples): Promise<void> {
  if (gcd(STRIDE, settings.storeSize) !== 1) throw new Error(`key store size ${settings.storeSize} shares a factor with ${STRIDE}`);
  if (settings.rounds * settings.lookupsPerRound * 2 > settings.storeSize) throw new Error('more cold lookups than addresses in the store');
  let nextAddress = 0;
  const takeAddresses = (count: number) => Array.from({ length: count }, () => bulkAddress((nextAddress++ * STRIDE) % settings.storeSize));
  await withDatabase(database, async (db) => {
    const directory = await createKeyDirectory(db, { local_part_case_sensitive: false, recipient_delimiter: '+', cache_ttl_seconds: 300 }, createLogger('silent'));
    try {
      for (let round = 0; round < settings.rounds; round++) {
        const cold = takeAddresses(settings.lookupsPerRound);
        samples.add('key_lookup_cold_ms', 'ms', await timeSequential(directory, cold, 'usable', settings.deadline));
        const concurrent = takeAddresses(settings.lookupsPerRound);
        const seconds = await timeConcurrent(directory, concurrent, settings.concurrency, settings.deadline);
        samples.add(`key_lookup_cold_c${settings.concurrency}_per_s`, 'lookups/s', concurrent.length / seconds);
        const unknown = Array.from({ length: settings.lookupsPerRound }, (_, i) => `nobody${round}x${i}@d${i % 100}.bulk.example`);
        samples.add('key_lookup_unknown_ms', 'ms', await timeSequential(directory, unknown, 'none', settings.deadline));
        const warmMs = await timeWarm(directory, cold, settings.warmPasses, settings.deadline);
        samples.add('key_lookup_warm_us', 'µs', warmMs * 1000);
      }
    } finally {
      await directory.close();
    }
  });
}

/** Mean milliseconds per lookup, one at a time; every answer must be of the expected kind. */
async function timeSequential(directory: CachedKeyDirectory, addresses: readonly string[], expected: RecipientKeys['kind'], deadline: number): Promise<number> {
  const started = performance.now();
  for (const address of addresses) {
    checkDeadline(deadline);
    expectKind(await directory.lookup(address), expected);
  }
  return (performance.now() - started) / addresses.length;
}

/** Seconds to look all addresses up with `concurrency` lookups in flight. */
async function timeConcurrent(directory: CachedKeyDirectory, addresses: readonly string[], concurrency: number, deadline: number): Promise<number> {
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < addresses.length; index = next++) {
      checkDeadline(deadline);
      expectKind(await directory.lookup(addresses[index]!), 'usable');
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return (performance.now() - started) / 1000;
}

/** Mean milliseconds per lookup of addresses already cached. */
async function timeWarm(directory: CachedKeyDirectory, addresses: readonly string[], passes: number, deadline: number): Promise<number> {
  const missesBefore = directory.stats().misses;
  const started = performance.now();
  for (let pass = 0; pass < passes; pass++) {
    checkDeadline(deadline);
    for (const address of addresses) expectKind(await directory.lookup(address), 'usable');
  }
  const elapsed = performance.now() - started;
  if (directory.stats().misses !== missesBefore) throw new Error('warm key lookups missed the cache');
  return elapsed / (passes * addresses.length);
}

function expectKind(answer: RecipientKeys, expected: RecipientKeys['kind']): void {
  if (answer.kind !== expected) throw new Error(`key lookup for ${answer.address}: expected ${expected}, got ${answer.kind}`);
}

function checkDeadline(deadline: number): void {
  if (Date.now() > deadline) throw new Error('key lookups passed their deadline');
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
