import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PacketFramingError, packetHeaders, packetTagAt } from '../../src/crypto/packet-reader.js';
import { PartialPacketWriter, packetHeader } from '../../src/crypto/packets.js';

const tagsOf = (bytes: Uint8Array) => [...packetHeaders(bytes)].map((header) => header.tag);

describe('packetHeaders', () => {
  it('walks new-format packets of every definite length encoding', () => {
    const bodies = [Buffer.alloc(5, 1), Buffer.alloc(300, 2), Buffer.alloc(9000, 3)];
    const bytes = Buffer.concat(bodies.flatMap((body, index) => [packetHeader(13 + index, body.length), body]));
    const headers = [...packetHeaders(bytes)];
    assert.deepEqual(headers.map((header) => header.tag), [13, 14, 15]);
    assert.deepEqual(headers.map((header) => header.end - header.bodyStart), [5, 300, 9000]);
    assert.equal(headers.at(-1)!.end, bytes.length);
  });

  it('walks old-format packets (one, two and four length octets, and indeterminate)', () => {
    const bytes = Buffer.concat([
      Buffer.from([0x98, 2, 0xaa, 0xbb]), // tag 6, one-octet length
      Buffer.from([0xb5, 0, 3, 1, 2, 3]), // tag 13, two-octet length
      Buffer.from([0x8a, 0, 0, 0, 1, 9]), // tag 2, four-octet length
      Buffer.from([0xaf, 7, 7, 7]), // tag 11, indeterminate: to the end
    ]);
    assert.deepEqual(tagsOf(bytes), [6, 13, 2, 11]);
  });

  it('follows partial body lengths to the packet after them', () => {
    const chunks: Buffer[] = [];
    const writer = new PartialPacketWriter(18, (bytes) => chunks.push(bytes), 9);
    writer.write(Buffer.alloc(2000, 1));
    writer.end();
    const bytes = Buffer.concat([...chunks, packetHeader(13, 3), Buffer.from('abc')]);
    assert.deepEqual(tagsOf(bytes), [18, 13]);
  });

  it('refuses a truncated packet and a byte that is no packet header', () => {
    assert.throws(() => tagsOf(Buffer.concat([packetHeader(13, 10), Buffer.alloc(4)])), PacketFramingError);
    assert.throws(() => tagsOf(Buffer.from([0xc6, 0xff, 0, 0])), /cut off/);
    assert.throws(() => tagsOf(Buffer.from([0xc6, 0, 0x41])), /no packet header at byte 2/);
  });

  it('names the tag of a first octet, or nothing for text', () => {
    assert.equal(packetTagAt(Buffer.from([0x99])), 6);
    assert.equal(packetTagAt(Buffer.from([0xc6])), 6);
    assert.equal(packetTagAt(Buffer.from('-----BEGIN')), undefined);
    assert.equal(packetTagAt(Buffer.alloc(0)), undefined);
  });
});
