import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { configAdvice } from '../../src/config/advice.js';
import { loadConfig } from '../../src/config/load.js';

const advisedSettings = (env: Record<string, string>) => configAdvice(loadConfig({ env })).map((advice) => advice.setting);

describe('configAdvice', () => {
  test('a delivery ledger kept shorter than Postfix retries a message is advised against, naming both figures', () => {
    const [advice] = configAdvice(loadConfig({ env: { LACRE_RELAY_DELIVERED_RETENTION_HOURS: '24' } }));
    assert.equal(advice?.setting, 'relay.delivered_retention_hours');
    assert.match(advice.message, /^24 h is shorter than Postfix's default maximal_queue_lifetime \(120 h\)/);
  });

  test('no advice for the default, for 120 h and longer, or for the ledger turned off', () => {
    for (const hours of [undefined, '120', '240', '0']) {
      assert.deepEqual(advisedSettings(hours === undefined ? {} : { LACRE_RELAY_DELIVERED_RETENTION_HOURS: hours }), [], String(hours));
    }
  });
});
