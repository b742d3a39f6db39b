import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalAddress, InvalidAddressError, normaliseAddress, parseAddress } from '../../src/keys/address.js';

const insensitive = { localPartCaseSensitive: false };
const sensitive = { localPartCaseSensitive: true };

describe('address normalisation', () => {
  it('trims, strips angle brackets and lower-cases the domain', () => {
    assert.deepEqual(parseAddress('  <Alice.Smith@Example.ORG>  '), { localPart: 'Alice.Smith', domain: 'example.org' });
    assert.equal(canonicalAddress('Alice@EXAMPLE.org.'), 'Alice@example.org');
  });

  it('lower-cases the local part unless configured case-sensitive', () => {
    assert.equal(normaliseAddress('Alice@Example.org', insensitive), 'alice@example.org');
    assert.equal(normaliseAddress('Alice@Example.org', sensitive), 'Alice@example.org');
  });

  it('keeps IDN domains in the form given (lower-cased), and UTF-8 local parts', () => {
    assert.equal(normaliseAddress('Jürgen@BÜCHER.example', insensitive), 'jürgen@bücher.example');
    assert.equal(normaliseAddress('user@xn--bcher-kva.example', insensitive), 'user@xn--bcher-kva.example');
  });

  it('accepts quoted local parts, plus-addressing and address literals', () => {
    assert.equal(normaliseAddress('"john smith"@example.org', sensitive), '"john smith"@example.org');
    assert.equal(normaliseAddress('a+tag@example.org', insensitive), 'a+tag@example.org');
    assert.equal(normaliseAddress('root@[192.0.2.1]', insensitive), 'root@[192.0.2.1]');
  });

  for (const bad of ['', '   ', '<>', 'alice', 'alice@', '@example.org', 'al ice@example.org', 'alice@exa mple.org', 'a..b@example.org',
    '.a@example.org', 'alice@-example.org', 'alice@example..org', 'Alice <alice@example.org>', 'a\nb@example.org', `${'x'.repeat(320)}@example.org`]) {
    it(`rejects ${JSON.stringify(bad.length > 40 ? `${bad.slice(0, 20)}…` : bad)}`, () => {
      assert.throws(() => normaliseAddress(bad, insensitive), InvalidAddressError);
    });
  }
});
