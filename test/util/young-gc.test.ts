import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { COLLECT_EVERY_BYTES, noteStreamedBytes, youngCollections } from '../../src/util/young-gc.js';

/** Young-generation collections V8 reports while `run` runs. */
async function minorCollectionsDuring(run: () => void): Promise<number> {
  const entries: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => entries.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  run();
  await new Promise((resolve) => setTimeout(resolve, 50)); // gc entries are delivered asynchronously
  observer.disconnect();
  return entries.filter((entry) => (entry as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR).length;
}

describe('young-generation collection while big messages stream', () => {
  it('collects once per COLLECT_EVERY_BYTES streamed, counting every message together', async () => {
    noteStreamedBytes(COLLECT_EVERY_BYTES); // whatever earlier streams left counted, this starts from zero
    const before = youngCollections();
    const seen = await minorCollectionsDuring(() => {
      for (let i = 0; i < 9; i++) noteStreamedBytes(COLLECT_EVERY_BYTES / 4); // two thresholds and a quarter
    });
    assert.equal(youngCollections() - before, 2);
    assert.ok(seen >= 2, `V8 reported ${seen} minor collections`);
  });

  it('collects exactly when the threshold is reached, not a byte before', () => {
    noteStreamedBytes(COLLECT_EVERY_BYTES);
    const before = youngCollections();
    noteStreamedBytes(COLLECT_EVERY_BYTES - 1);
    assert.equal(youngCollections(), before);
    noteStreamedBytes(1);
    assert.equal(youngCollections(), before + 1);
  });
});
