import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runPeriodically } from '../../src/util/periodic.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('runPeriodically', () => {
  it('runs at once, never two runs at a time, reports a failing run and runs again; close waits for the run in progress', async () => {
    let active = 0;
    let most = 0;
    let runs = 0;
    const errors: unknown[] = [];
    const job = runPeriodically(
      async () => {
        runs += 1;
        active += 1;
        most = Math.max(most, active);
        await sleep(60);
        active -= 1;
        if (runs === 1) throw new Error('first run fails');
      },
      10,
      (error) => errors.push(error),
    );
    assert.equal(runs, 1, 'the first run starts at once');
    await sleep(200);
    await job.close();
    assert.equal(active, 0, 'close waited for the run in progress');
    const after = runs;
    await sleep(50);
    assert.equal(runs, after, 'no run after close');
    assert.equal(most, 1, 'runs never overlap, though the interval is shorter than a run');
    assert.ok(runs >= 2, 'a failed run does not stop the next');
    assert.deepEqual(errors.map((error) => (error as Error).message), ['first run fails']);
  });
});
