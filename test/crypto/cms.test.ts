import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isEnvelopedCms, readTlv } from '../../src/crypto/cms.js';
import { createSmimeIdentity, opensslAvailable, smimeDer, type SmimeIdentity } from '../helpers/smime.js';

const ENVELOPED_DATA = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const DATA = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/** ContentInfo in BER with indefinite lengths throughout, as `openssl smime -stream` writes it. */
const berEnveloped = (oid = ENVELOPED_DATA) => Buffer.from([0x30, 0x80, ...oid, 0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00, 0x31, 0x00, 0, 0, 0, 0, 0, 0]);
/** The same in DER, every length definite. */
const derEnveloped = (version = 0) => Buffer.from([0x30, 0x14, ...ENVELOPED_DATA, 0xa0, 0x07, 0x30, 0x05, 0x02, 0x01, version, 0x31, 0x00]);
const hasOpenssl = await opensslAvailable();
const entity = Buffer.from('Content-Type: text/plain\r\n\r\nSecret meeting at noon.\r\n');

describe('CMS reader', () => {
  it('reads short, long and indefinite lengths, and refuses what it does not read', () => {
    assert.deepEqual(readTlv(Buffer.from([0x30, 0x05]), 0), { tag: 0x30, contentOffset: 2, length: 5 });
    assert.deepEqual(readTlv(Buffer.from([0x30, 0x82, 0x01, 0x00]), 0), { tag: 0x30, contentOffset: 4, length: 256 });
    assert.deepEqual(readTlv(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), 0), { tag: 0x30, contentOffset: 6, length: 2 ** 32 - 1 });
    assert.deepEqual(readTlv(Buffer.from([0xa0, 0x80]), 0), { tag: 0xa0, contentOffset: 2, length: undefined });
    assert.equal(readTlv(Buffer.from([0x02, 0x80]), 0), undefined, 'an indefinite length on a primitive');
    assert.equal(readTlv(Buffer.from([0x30, 0x85, 1, 1, 1, 1, 1]), 0), undefined, 'five length octets');
    assert.equal(readTlv(Buffer.from([0x30, 0x82, 0x01]), 0), undefined, 'cut short');
    assert.equal(readTlv(Buffer.from([0x1f, 0x01]), 0), undefined, 'a high tag number');
    assert.equal(readTlv(Buffer.from([0x30]), 0), undefined);
  });

  it('recognises EnvelopedData in BER and DER', () => {
    assert.equal(isEnvelopedCms(berEnveloped(), true), true);
    assert.equal(isEnvelopedCms(derEnveloped(), true), true);
  });

  const refused: Array<[string, Buffer]> = [
    ['nothing', Buffer.alloc(0)],
    ['plaintext', Buffer.from('Secret meeting at noon.')],
    ['ContentInfo of plain data', berEnveloped(DATA)],
    ['an unknown EnvelopedData version', derEnveloped(7)],
    ['a definite length that does not match the whole body', Buffer.concat([derEnveloped(), Buffer.from([0])])],
    ['a content type that runs past its ContentInfo', Buffer.from([0x30, 0x05, ...ENVELOPED_DATA, 0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00])],
    ['a ContentInfo that is not a SEQUENCE', Buffer.from([0x31, 0x80, ...ENVELOPED_DATA, 0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00])],
    ['content not under [0]', Buffer.from([0x30, 0x80, ...ENVELOPED_DATA, 0xa1, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00])],
  ];
  for (const [name, bytes] of refused) {
    it(`says no to ${name}`, () => assert.equal(isEnvelopedCms(bytes, true), false));
  }

  it('says no to every strict prefix of a whole body, and yes to a window once the version is in it', () => {
    const der = derEnveloped();
    for (let cut = 0; cut < der.length; cut++) {
      assert.equal(isEnvelopedCms(der.subarray(0, cut), true), false, `${cut} bytes as the whole body`);
      assert.equal(isEnvelopedCms(der.subarray(0, cut), false), cut >= 20, `window of ${cut} bytes`);
    }
  });

  it('never throws on random bytes or random damage', () => {
    for (let round = 0; round < 3000; round++) {
      const damaged = Buffer.from(round % 2 ? berEnveloped() : derEnveloped());
      damaged[round % damaged.length] = Math.floor(Math.random() * 256);
      assert.equal(typeof isEnvelopedCms(damaged, round % 3 === 0), 'boolean');
      assert.equal(typeof isEnvelopedCms(randomBytes(round % 40), round % 2 === 0), 'boolean');
    }
  });

  describe('as openssl writes it', { skip: !hasOpenssl && 'needs openssl' }, () => {
    let identity: SmimeIdentity;
    before(async () => {
      identity = await createSmimeIdentity('alice@example.test');
    });
    after(() => identity.remove());

    it('recognises EnvelopedData and AuthEnvelopedData, whole and through a window', async () => {
      for (const form of ['enveloped', 'auth-enveloped'] as const) {
        const der = await smimeDer(identity, form, Buffer.concat([entity, randomBytes(5000)]));
        assert.equal(isEnvelopedCms(der, true), true, form);
        assert.equal(isEnvelopedCms(der.subarray(0, 100), false), true, `${form}, first 100 bytes`);
        assert.equal(isEnvelopedCms(der.subarray(0, der.length - 1), true), false, `${form}, cut short`);
      }
    });

    it('says no to SignedData', async () => {
      assert.equal(isEnvelopedCms(await smimeDer(identity, 'signed', entity), true), false);
    });
  });
});
