/**
 * Seeds and run counts of the property tests (docs/fuzzing.md). Each property runs with a fixed seed, so that
 * CI is reproducible, and with a few random seeds, so that every run looks somewhere new; each seed is printed,
 * and a failure names the one to replay:
 *
 *   LACRE_FUZZ_SEED=<seed> LACRE_FUZZ_RUNS=<runs> node --test dist/test/fuzz/<file>.test.js
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import fc from 'fast-check';
import { findPackageRoot } from '../../src/util/package-root.js';

export const FIXED_SEED = 15_04_2026;
const RANDOM_SEEDS = 2;

/** The seeds to run: LACRE_FUZZ_SEED alone when set, else the fixed one and a few random ones. */
export function fuzzSeeds(): number[] {
  const given = process.env.LACRE_FUZZ_SEED;
  if (given !== undefined && given !== '') return [Number(given)];
  return [FIXED_SEED, ...Array.from({ length: RANDOM_SEEDS }, () => randomInt(2 ** 31))];
}

/** Runs per seed: LACRE_FUZZ_RUNS when set, else the property's own default (sized for `npm test`). */
export function fuzzRuns(defaultRuns: number): number {
  const given = Number(process.env.LACRE_FUZZ_RUNS);
  return Number.isInteger(given) && given > 0 ? given : defaultRuns;
}

/**
 * Checks `property` under every seed. A failure names the seed to replay, and prints the shrunk counterexample
 * as JSON (bytes as base64) ready to be kept in test/fuzz/corpus/.
 */
export async function checkProperty<T>(name: string, property: fc.IAsyncPropertyWithHooks<T> | fc.IPropertyWithHooks<T>, defaultRuns: number): Promise<void> {
  const numRuns = fuzzRuns(defaultRuns);
  for (const seed of fuzzSeeds()) {
    const replay = `LACRE_FUZZ_SEED=${seed} LACRE_FUZZ_RUNS=${numRuns}`;
    console.log(`fuzz ${name}: seed ${seed}, ${numRuns} runs (replay: ${replay})`);
    const details = await fc.check(property as fc.IAsyncPropertyWithHooks<T>, { seed, numRuns });
    if (!details.failed) continue;
    const example = JSON.stringify(details.counterexample, (_key, value: unknown) => (isBufferJson(value) ? Buffer.from(value.data).toString('base64') : value));
    const cause = details.errorInstance;
    throw new Error(`fuzz ${name} failed (replay: ${replay}); keep the counterexample in test/fuzz/corpus/:\n${example}\n${String(cause)}`, { cause });
  }
}

function isBufferJson(value: unknown): value is { type: 'Buffer'; data: number[] } {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data);
}

/** A kept counterexample: which property it broke, and its input (bytes as base64). */
export interface CorpusCase {
  readonly file: string;
  readonly target: string;
  readonly note: string;
  readonly input: Record<string, unknown>;
}

export const corpusDir = join(findPackageRoot(), 'test', 'fuzz', 'corpus');

/**
 * Whether every seed runs (LACRE_FUZZ_SEED unset) as many times as the property's default (not lowered through
 * LACRE_FUZZ_RUNS): then a property may also check that its inputs reached every outcome it is there to
 * exercise. A replay of one seed is about one counterexample, and is not held to that.
 */
export function coverageExpected(defaultRuns: number): boolean {
  const seed = process.env.LACRE_FUZZ_SEED;
  return (seed === undefined || seed === '') && fuzzRuns(defaultRuns) >= defaultRuns;
}

/** The kept files for a target, by name (<target>-*.json): what a replay must have replayed, all of it. */
export function corpusFiles(target: string): string[] {
  return readdirSync(corpusDir).filter((file) => file.startsWith(`${target}-`) && file.endsWith('.json'));
}

export function corpusCases(target: string): CorpusCase[] {
  return readdirSync(corpusDir)
    .filter((file) => file.endsWith('.json'))
    .map((file) => ({ file, ...(JSON.parse(readFileSync(join(corpusDir, file), 'utf8')) as Omit<CorpusCase, 'file'>) }))
    .filter((entry) => entry.target === target);
}

/**
 * The chunks of `raw` for a list of cuts: positions (any naturals, taken modulo the length), or a single negative
 * number -n for chunks of n bytes (as a stream delivers them). Never an empty chunk, as a byte stream never has.
 * Two chunks at least when `raw` has two bytes, so that chunk-boundary independence is never checked vacuously:
 * a size of the whole length or more is taken below it, and cuts that all fall on 0 (or none) cut once inside.
 */
export function cutInto(raw: Buffer, cuts: readonly number[]): Buffer[] {
  if (raw.length === 0) return [];
  if (raw.length === 1) return [raw];
  if (cuts.length === 1 && cuts[0]! < 0) {
    const given = -cuts[0]!;
    const size = given < raw.length ? given : 1 + ((given - 1) % (raw.length - 1));
    return Array.from({ length: Math.ceil(raw.length / size) }, (_, i) => raw.subarray(i * size, (i + 1) * size));
  }
  const positions = cuts.map((cut) => Math.abs(cut) % raw.length).filter((cut) => cut > 0);
  if (positions.length === 0) positions.push(1 + (Math.abs(cuts[0] ?? raw.length >> 1) % (raw.length - 1)));
  const at = [...new Set(positions)].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const cut of [...at, raw.length]) {
    chunks.push(raw.subarray(start, cut));
    start = cut;
  }
  return chunks;
}

/** Any split of a byte string: cut anywhere, or into chunks of one size (sizes near Lacre's own bounds among them). */
export const cuts = fc.oneof(
  { weight: 3, arbitrary: fc.array(fc.nat({ max: 1 << 20 }), { minLength: 1, maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constantFrom(1, 2, 3, 7, 100, 1000, 4096, 8191, 8192, 8200, 16384).map((size) => [-size]) },
);
