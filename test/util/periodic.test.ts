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
    // close() is called while the second run sleeps (not after a guessed delay): it must wait for that sleep to end.
    let secondRunSleeps!: () => void;
    const secondRunSleeping = new Promise<void>((resolve) => {
      secondRunSleeps = resolve;
    });
    let secondRunSlept = false;
    const job = runPeriodically(
      async () => {
        runs += 1;
        const run = runs;
        active += 1;
        most = Math.max(most, active);
        if (run === 2) secondRunSleeps();
        await sleep(60);
        if (run === 2) secondRunSlept = true;
        active -= 1;
        if (run === 1) throw new Error('first run fails');
      },
      10,
      (error) => errors.push(error),
    );
    assert.equal(runs, 1, 'the first run starts at once');
    // The job's timer is unref'd: this one keeps the process alive until the second run starts (or fails the test).
    let deadline: NodeJS.Timeout | undefined;
    await Promise.race([
      secondRunSleeping,
      new Promise((_, reject) => {
        deadline = setTimeout(() => reject(new Error('no second run within 5 s')), 5_000);
      }),
    ]);
    clearTimeout(deadline);
    await job.close();
    assert.ok(secondRunSlept, 'close resolved only once the run in progress had finished its sleep');
    assert.equal(active, 0, 'close waited for the run in progress');
    const after = runs;
    await sleep(50);
    assert.equal(runs, after, 'no run after close');
    assert.equal(most, 1, 'runs never overlap, though the interval is shorter than a run');
    assert.ok(runs >= 2, 'a failed run does not stop the next');
    assert.deepEqual(errors.map((error) => (error as Error).message), ['first run fails']);
  });

  it('a task that throws before its first await, or an error report that throws, stops neither the process nor the next run', async () => {
    let runs = 0;
    const job = runPeriodically(
      (() => {
        runs += 1;
        throw new Error('thrown at once');
      }) as () => Promise<void>,
      10,
      () => {
        throw new Error('the report fails too');
      },
    );
    await sleep(60);
    await job.close();
    assert.ok(runs >= 2, `${runs} runs`);
  });
});
