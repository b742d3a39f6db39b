import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseByteSize } from '../../src/config/units.js';
import { formatByteSize } from '../../src/util/byte-size.js';

describe('formatByteSize', () => {
  it('uses the largest unit that divides the size exactly, binary first, else bytes', () => {
    assert.equal(formatByteSize(200 * 1024 * 1024), '200 MiB');
    assert.equal(formatByteSize(1024 ** 3), '1 GiB');
    assert.equal(formatByteSize(1536 * 1024), '1536 KiB');
    assert.equal(formatByteSize(200_000_000), '200 MB');
    assert.equal(formatByteSize(64_000), '64 kB');
    assert.equal(formatByteSize(1_500_001), '1500001 bytes');
    assert.equal(formatByteSize(1), '1 byte');
    assert.equal(formatByteSize(0), '0 bytes');
  });

  it('writes what parseByteSize reads back as the same number', () => {
    for (const bytes of [0, 1, 1000, 1024, 64_000, 1_500_001, 200 * 1024 ** 2, 200_000_000, 3 * 1024 ** 4, 5e12]) {
      assert.equal(parseByteSize(formatByteSize(bytes)), bytes, formatByteSize(bytes));
    }
  });
});
