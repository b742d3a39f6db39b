import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WebError } from '../../src/web/errors.js';
import { clientKey, SlidingWindowLimit } from '../../src/web/rate-limit.js';

describe('the per-client limit', () => {
  it('counts an IPv6 client by its /64, an IPv4-mapped one as its IPv4', () => {
    assert.equal(clientKey('2001:db8:0:1::1'), clientKey('2001:DB8:0:1:ffff:ffff:ffff:fffe'));
    assert.notEqual(clientKey('2001:db8:0:1::1'), clientKey('2001:db8:0:2::1'));
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
  });

  it('refuses one request too many within the hour with 429 and Retry-After, and forgets it an hour later', () => {
    let now = 0;
    const limit = new SlidingWindowLimit(2, 3600_000, () => now);
    const subnet = (host: number) => clientKey(`2001:db8:0:1::${host}`);
    limit.hit(subnet(1));
    now = 1000;
    limit.hit(subnet(2));
    const refusal = (() => {
      try {
        limit.hit(subnet(3));
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    assert.ok(refusal instanceof WebError);
    assert.equal(refusal.status, 429);
    assert.equal(refusal.headers['Retry-After'], String(3600 - 1));
    limit.hit('192.0.2.1');
    now = 3600_001;
    limit.hit(subnet(4));
  });
});
