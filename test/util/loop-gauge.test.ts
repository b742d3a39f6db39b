import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { EventLoopGauge } from '../../src/util/loop-gauge.js';

function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

describe('event loop gauge', () => {
  it('is busy after a window spent running, idle after one spent waiting, and holds its reading within a window', async () => {
    const gauge = new EventLoopGauge(0.8, 100);
    spin(150);
    assert.equal(gauge.isBusy(), true, 'a 150 ms window spent running');
    // Read again at once: a sleep here could outlast the window on a loaded machine.
    assert.equal(gauge.isBusy(), true, 'within the next window the last reading holds');
    await sleep(200);
    assert.equal(gauge.isBusy(), false, 'a window spent waiting');
  });

  it('counts the first window as idle', () => {
    assert.equal(new EventLoopGauge(0.8, 100).isBusy(), false);
  });
});
