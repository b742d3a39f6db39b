import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  decodePreamble,
  encodePreamble,
  ENCODED_PREAMBLE_LENGTH,
  FRAMING_BYTES,
  incomingFraming,
  InvalidPreambleError,
  LEGACY_PREAMBLE_BYTES,
  readFraming,
  tagOf,
} from '../../src/soledad/preamble.js';

const BLOB_ID = '5f2b9c1e-0d6a-4c1b-9a57-3e8f2d4b6a10';

/** What Soledad's server packs, computed by Python's struct (stdlib only) with Soledad's format string. */
function pythonPreamble(blobId: string, size: number, timestamp: number): Buffer {
  const script = `
import struct, sys, base64
s = struct.Struct('2sbbQ16s255p255pQ')
sys.stdout.write(base64.urlsafe_b64encode(s.pack(b'\\x13\\x37', 2, 3, ${timestamp}, b'', ${JSON.stringify(blobId)}.encode(), b'0', ${size})).decode())`;
  return Buffer.from(execFileSync('python3', ['-c', script], { encoding: 'utf8' }), 'ascii');
}

describe('Soledad preamble', () => {
  it('packs an incoming blob exactly as Soledad does (checked with Python struct)', () => {
    const framing = incomingFraming(BLOB_ID, 1234, new Date(1_700_000_000_500));
    assert.equal(framing.length, FRAMING_BYTES);
    assert.equal(framing.subarray(0, ENCODED_PREAMBLE_LENGTH).toString('ascii'), pythonPreamble(BLOB_ID, 1234, 1_700_000_000).toString('ascii'));
    assert.equal(framing.at(-1), 0x20);
    assert.ok(framing.toString('ascii').startsWith('EzcCAw'));
  });

  it('reads back what it packs, and finds the payload after the first space', () => {
    const payload = Buffer.from('-----BEGIN PGP MESSAGE-----\n\nwcBMA...\n-----END PGP MESSAGE-----\n');
    const blob = Buffer.concat([incomingFraming(BLOB_ID, payload.length, new Date(0)), payload]);
    const framing = readFraming(blob);
    assert.ok(framing);
    assert.deepEqual(framing.preamble, { scheme: 2, method: 3, timestamp: 0, docId: BLOB_ID, rev: '0', size: payload.length });
    assert.deepEqual(blob.subarray(framing.payloadOffset), payload);
  });

  it('reads the legacy 542-byte form, which has no size', () => {
    const legacy = encodePreamble({ scheme: 1, method: 2, timestamp: 7, docId: 'x', rev: 'r', size: undefined }).subarray(0, LEGACY_PREAMBLE_BYTES);
    assert.deepEqual(decodePreamble(legacy), { scheme: 1, method: 2, timestamp: 7, docId: 'x', rev: 'r', size: undefined });
    const script = "import struct, sys; sys.stdout.write(struct.Struct('2sbbQ16s255p255p').pack(b'\\x13\\x37', 1, 2, 7, b'', b'x', b'r').hex())";
    const packedByPython = Buffer.from(execFileSync('python3', ['-c', script], { encoding: 'utf8' }), 'hex');
    assert.equal(packedByPython.length, LEGACY_PREAMBLE_BYTES);
    assert.deepEqual(decodePreamble(packedByPython), { scheme: 1, method: 2, timestamp: 7, docId: 'x', rev: 'r', size: undefined });
  });

  it('refuses a wrong length, a wrong magic and a head that is not base64url', () => {
    assert.throws(() => decodePreamble(Buffer.alloc(546)), InvalidPreambleError);
    const wrongMagic = encodePreamble({ scheme: 2, method: 3, timestamp: 0, docId: 'x', rev: '0', size: 0 });
    wrongMagic[0] = 0x14;
    assert.throws(() => decodePreamble(wrongMagic), /0x13 0x37/);
    assert.throws(() => readFraming(Buffer.from('not+base64/ payload')), InvalidPreambleError);
    assert.equal(readFraming(Buffer.from('x'.repeat(800))), undefined);
  });

  it('tags a blob with its last 16 bytes in padded base64url, as Soledad\'s client needs', () => {
    const tail = Buffer.from('GP MESSAGE-----\n');
    assert.equal(tail.length, 16);
    assert.equal(tagOf(tail), 'R1AgTUVTU0FHRS0tLS0tCg==');
    assert.equal(tagOf(Buffer.from([0xfb, 0xff, 0xbf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), '-_-_AAAAAAAAAAAAAAAAAA==');
    // A blob shorter than 16 bytes (a bare upload): all of it, still padded to what base64 decoders accept.
    assert.equal(tagOf(Buffer.from('x')), 'eA==');
    assert.equal(tagOf(Buffer.from('abc')), 'YWJj');
    assert.equal(tagOf(Buffer.alloc(0)), '');
  });
});
