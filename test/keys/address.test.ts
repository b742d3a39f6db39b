import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalAddress, canonicalDomain, InvalidAddressError, normaliseAddress, parseAddress, unicodeDomainVariant, withoutExtension } from '../../src/keys/address.js';

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

  it('compares and stores IDN domains as lower-cased A-labels, whichever form they came in; UTF-8 local parts stay', () => {
    assert.equal(normaliseAddress('Jürgen@BÜCHER.example', insensitive), 'jürgen@xn--bcher-kva.example');
    assert.equal(normaliseAddress('user@xn--bcher-kva.example', insensitive), 'user@xn--bcher-kva.example');
    assert.equal(canonicalAddress('Dave@XN--EXMPLE-CUA.org'), 'Dave@xn--exmple-cua.org');
    assert.equal(canonicalAddress('Dave@exämple.org'), 'Dave@xn--exmple-cua.org');
    assert.equal(canonicalDomain('Exämple.ORG.'), 'xn--exmple-cua.org');
    assert.equal(canonicalAddress('x@123.example'), 'x@123.example', 'an ASCII domain is its own A-label');
  });

  it('gives the Unicode spelling of an A-label address, the form rows were stored in before', () => {
    assert.equal(unicodeDomainVariant('dave@xn--exmple-cua.org'), 'dave@exämple.org');
    assert.equal(unicodeDomainVariant('dave@example.org'), undefined);
  });

  it('drops a subaddress extension as Postfix does (recipient_delimiter: any of its characters)', () => {
    assert.equal(withoutExtension('alice+tag@example.org', '+'), 'alice@example.org');
    assert.equal(withoutExtension('alice+a+b@example.org', '+'), 'alice@example.org', 'the first delimiter starts the extension');
    assert.equal(withoutExtension('alice-tag@example.org', '+'), undefined);
    assert.equal(withoutExtension('alice-tag@example.org', '+-'), 'alice@example.org');
    assert.equal(withoutExtension('alice-x+y@example.org', '+-'), 'alice@example.org');
    assert.equal(withoutExtension('alice+tag@example.org', ''), undefined, 'empty: no extensions');
    assert.equal(withoutExtension('alice@example.org', '+'), undefined);
    assert.equal(withoutExtension('+tag@example.org', '+'), undefined, 'not at the first character');
    assert.equal(withoutExtension('owner-list@example.org', '-'), undefined, 'owner-foo is never split');
    assert.equal(withoutExtension('list-request@example.org', '-'), undefined, 'foo-request is never split');
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
