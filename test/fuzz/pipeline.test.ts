/**
 * The message path as a property: for any byte string cut anywhere, splitMessage → detector → plan → assemble
 * terminates, every copy is either the input byte for byte (plain, already encrypted) or decrypts to exactly what
 * it must (PGP/MIME: the content entity; inline: the decoded body; an Incoming Box copy: the whole message), and
 * nothing depends on where the chunks were cut or on which path (in memory, streamed) the message took.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import libbase64 from 'libbase64';
import libqp from 'libqp';
import * as openpgp from 'openpgp';
import { processMessage, type MessageResult } from '../../src/filter/pipeline.js';
import type { BoxDownstream, Downstream } from '../../src/filter/ports.js';
import type { RecipientKeys } from '../../src/keys/types.js';
import { MessageRejectedError } from '../../src/errors.js';
import { contentEntity, smimeMessage, splitRaw } from '../helpers/corpus.js';
import { restoreOriginal, unwrap } from '../../src/mime/unwrap.js';
import { encryptedMessages, messageBytes, type EncryptedContent } from './messages.js';
import { checkProperty, corpusCases, corpusFiles, coverageExpected, cutInto, cuts } from './settings.js';

const BEGIN = '-----BEGIN PGP MESSAGE-----';
/** DER of OID 1.2.840.113549.1.7.3, envelopedData: what a CMS ContentInfo of an S/MIME encrypted message names. */
const ENVELOPED_DATA_OID = Buffer.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03]);
/** DER of OID 1.2.840.113549.1.9.16.1.23, authEnvelopedData (RFC 5083), which Lacre passes too. */
const AUTH_ENVELOPED_DATA_OID = Buffer.from([0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17]);
const END = '-----END PGP MESSAGE-----';
const RUNS = 60;

const ALICE = 'alice@example.test'; // PGP/MIME
const BOB = 'bob@example.test'; // inline PGP when the message can carry it
const CAROL = 'carol@example.test'; // no key: the plain copy
const DAVE = 'dave@example.test'; // an Incoming Box user: the whole message encrypted

interface Run {
  readonly result: MessageResult;
  /** Every copy by recipient (the plain copy under each of its recipients). */
  readonly copies: Map<string, Buffer>;
}

async function readAll(raw: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of raw) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The last armored block of a copy: Lacre's own (it ends the copy, or comes just before the closing boundary). */
function lastArmor(copy: Buffer): { text: string; at: number } {
  const text = copy.toString('latin1');
  const at = text.lastIndexOf(BEGIN);
  const end = text.lastIndexOf(END);
  assert.ok(at !== -1 && end > at, 'an encrypted copy holds an armored block');
  return { text: text.slice(at, end + END.length), at };
}

async function* chunksOf(...buffers: Buffer[]): AsyncGenerator<Buffer> {
  yield* buffers;
}

/** The message as the user side rebuilds it (src/mime/unwrap.ts) from a PGP/MIME copy and its plaintext. */
async function restored(copy: Buffer, plaintext: Buffer): Promise<Buffer> {
  const wrapped = await unwrap(chunksOf(copy));
  assert.equal(wrapped.style, 'pgp-mime');
  for await (const line of wrapped.armor) void line;
  const pieces: Buffer[] = [];
  for await (const piece of await restoreOriginal(wrapped.outer, wrapped.style, chunksOf(plaintext))) pieces.push(piece);
  return Buffer.concat(pieces);
}

/**
 * Whether unwrap.ts can give the original back byte for byte, as its comment says: the Content-* fields come
 * last, a MIME-Version Lacre adds can be told apart, and the header block ends with a line ending.
 */
function restorable(raw: Buffer): boolean {
  const { headerLines } = splitRaw(raw);
  const text = headerLines.map((line) => line.toString('latin1'));
  const isContent = text.map((line) => /^content-/i.test(line));
  const firstContent = isContent.indexOf(true);
  if (firstContent !== -1 && isContent.slice(firstContent).includes(false)) return false;
  const mimeVersion = text.findIndex((line) => /^mime-version[ \t]*:/i.test(line));
  if (mimeVersion === -1 && firstContent !== -1) return false;
  const lastOuter = firstContent === -1 ? text.length - 1 : firstContent - 1;
  if (mimeVersion !== -1 && firstContent === -1 && mimeVersion === lastOuter) return false;
  const last = text[text.length - 1];
  return last === undefined || last.endsWith('\n');
}

describe('fuzz: the message path (split, read, detect, assemble)', () => {
  let key: openpgp.PrivateKey;
  let publicKey: openpgp.PublicKey;
  let armored: string[] = [];
  let encrypted: EncryptedContent;
  const spoolDir = mkdtempSync(join(tmpdir(), 'lacre-fuzz-spool-'));
  after(() => rmSync(spoolDir, { recursive: true, force: true }));

  before(async () => {
    ({ privateKey: key, publicKey } = await openpgp.generateKey({ userIDs: [{ email: ALICE }], format: 'object' }));
    const block = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'already secret' }), encryptionKeys: publicKey });
    const crlf = block.replace(/\r?\n/g, '\r\n');
    const pgpMime = ['--b', 'Content-Type: application/pgp-encrypted', '', 'Version: 1', '', '--b', 'Content-Type: application/octet-stream', '', crlf, '--b--', ''].join('\r\n');
    const smimeBody = smimeMessage.toString('latin1').split('\r\n\r\n')[1]!;
    armored = [block, crlf, pgpMime, smimeBody];
    encrypted = { armor: crlf, pgpMimeBody: pgpMime, smimeBody };
  });

  const usable = (address: string, style: 'mime' | 'inline'): RecipientKeys => ({ kind: 'usable', address, style, keys: [publicKey] });

  async function run(raw: Buffer, chunks: Buffer[], bufferLimit: number | undefined, maxHeaderSize: number): Promise<Run> {
    const copies = new Map<string, Buffer>();
    const relay: Downstream = {
      async send(envelope, copy) {
        const bytes = await readAll(copy);
        for (const to of envelope.to) copies.set(to, bytes);
        return new Map();
      },
    };
    const box: BoxDownstream = {
      async put(_user, _id, _scheme, copy) {
        copies.set(DAVE, await readAll(copy));
      },
    };
    const result = await processMessage(
      {
        from: 'sender@example.net',
        recipients: [
          { address: ALICE, lookup: usable(ALICE, 'mime') },
          { address: BOB, lookup: usable(BOB, 'inline') },
          { address: CAROL, lookup: { kind: 'none', address: CAROL } },
          { address: DAVE, lookup: usable(DAVE, 'mime'), boxUser: 'dave' },
        ],
        body: Readable.from(chunks),
        use8BitMime: true,
      },
      { relay, box },
      { maxHeaderSize, groupRecipients: false, spoolMemory: 1024 * 1024, spoolDir, ...(bufferLimit === undefined ? {} : { bufferLimit }) },
    );
    assert.equal(raw.length, chunks.reduce((sum, chunk) => sum + chunk.length, 0));
    return { result, copies };
  }

  async function decrypted(copy: Buffer): Promise<Buffer> {
    const message = await openpgp.readMessage({ armoredMessage: lastArmor(copy).text });
    const { data } = await openpgp.decrypt({ message, decryptionKeys: key, format: 'binary' });
    return Buffer.from(data);
  }

  /** What inline PGP encrypts: the body with its transfer encoding undone (the first such field counts). */
  function decodedBody(raw: Buffer): Buffer {
    const { headerLines, body } = splitRaw(raw);
    const field = headerLines.find((line) => /^content-transfer-encoding[ \t]*:/i.test(line.toString('latin1')));
    const encoding = field?.toString('latin1').replace(/^[^:]*:/, '').replace(/\r?\n[ \t]/g, ' ').trim().toLowerCase();
    // RFC 2045 §6.8: what is not in the alphabet is skipped.
    if (encoding === 'base64') return libbase64.decode(body.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''));
    if (encoding === 'quoted-printable') return libqp.decode(body.toString('latin1'));
    return body;
  }

  /** A message passed as already encrypted holds a real encrypted OpenPGP message (or CMS): no plaintext passes. */
  async function reallyEncrypted(raw: Buffer, reason: string): Promise<void> {
    if (reason.startsWith('S/MIME')) {
      // A ContentInfo: a SEQUENCE whose first element (right after its tag and length) is the content type OID.
      const der = decodedBody(raw);
      const at = 2 + (der[1]! & 0x80 ? der[1]! & 0x7f : 0);
      const names = (oid: Buffer) => der[0] === 0x30 && der.subarray(at, at + oid.length).equals(oid);
      assert.ok(names(ENVELOPED_DATA_OID) || names(AUTH_ENVELOPED_DATA_OID), `passed as "${reason}" without CMS (auth)enveloped data in its body`);
      return;
    }
    const text = raw.toString('latin1');
    for (let at = text.indexOf(BEGIN); at !== -1; at = text.indexOf(BEGIN, at + 1)) {
      const end = text.indexOf(END, at);
      if (end === -1) break;
      const message = await openpgp.readMessage({ armoredMessage: text.slice(at, end + END.length) }).catch(() => undefined);
      const tags = message?.packets.map((packet) => (packet.constructor as { tag?: number }).tag) ?? [];
      if (tags.includes(openpgp.enums.packet.symEncryptedIntegrityProtectedData) || tags.includes(openpgp.enums.packet.aeadEncryptedData)) return;
    }
    assert.fail(`passed as "${reason}" without an encrypted OpenPGP message in it`);
  }

  /** Every copy is right for this input; returns what must not depend on chunks or path. */
  async function checkCopies(raw: Buffer, { result, copies }: Run): Promise<string> {
    assert.deepEqual([...copies.keys()].sort(), [ALICE, BOB, CAROL, DAVE].sort(), 'every recipient got a copy');
    assert.ok(result.results.every((copy) => copy.error === undefined), 'no copy failed');
    assert.ok(copies.get(CAROL)!.equals(raw), 'the plain copy is the input byte for byte');
    if (result.alreadyEncrypted !== undefined) {
      for (const to of [ALICE, BOB, DAVE]) assert.ok(copies.get(to)!.equals(raw), `${to}: already encrypted, passed byte for byte`);
      await reallyEncrypted(raw, result.alreadyEncrypted);
      return `passed: ${result.alreadyEncrypted}`;
    }
    const entity = contentEntity(raw);
    const aliceEntity = await decrypted(copies.get(ALICE)!);
    assert.ok(aliceEntity.equals(entity), 'PGP/MIME decrypts to the content entity');
    if (restorable(raw)) assert.ok((await restored(copies.get(ALICE)!, aliceEntity)).equals(raw), 'the box client restores the original from the PGP/MIME copy');
    assert.ok((await decrypted(copies.get(DAVE)!)).equals(raw), 'the box copy decrypts to the whole message');
    const bobAction = result.plan.actions.get(BOB);
    const bobExpected = bobAction === 'encrypted-inline' ? decodedBody(raw) : entity;
    assert.ok((await decrypted(copies.get(BOB)!)).equals(bobExpected), `${bobAction}: decrypts to what it encrypts`);
    // The outer header kept, our own lines around the armor: the same whatever the cut (the boundary is random).
    const alice = copies.get(ALICE)!;
    const envelope = alice.subarray(0, lastArmor(alice).at).toString('latin1').replace(/=_lacre_[0-9a-f]{24}/g, 'BOUNDARY');
    return `encrypted (${bobAction}): ${envelope}`;
  }

  /** The outcome of one run: what its copies show, or the refusal of the whole message (a header block too large). */
  async function outcome(raw: Buffer, chunks: Buffer[], bufferLimit: number | undefined, maxHeaderSize: number): Promise<string> {
    let done: Run;
    try {
      done = await run(raw, chunks, bufferLimit, maxHeaderSize);
    } catch (error) {
      if (error instanceof MessageRejectedError) return `refused: ${error.message}`;
      throw error;
    }
    return checkCopies(raw, done);
  }

  /** How often each kind of outcome came out of the property's runs: each must, or the property proves little. */
  const outcomes = new Map<string, number>();

  function outcomeClass(whole: string): string {
    if (whole.startsWith('passed: S/MIME')) return 'passed: S/MIME';
    if (whole.startsWith('passed: ')) return whole;
    if (whole.startsWith('refused: ')) return 'refused';
    return whole.slice(0, whole.indexOf(')') + 1);
  }

  async function property(raw: Buffer, cutsAt: number[], bufferLimit: number | undefined, maxHeaderSize = 64 * 1024): Promise<void> {
    const whole = await outcome(raw, raw.length === 0 ? [] : [raw], undefined, maxHeaderSize);
    const chunks = cutInto(raw, cutsAt);
    if (raw.length >= 2) assert.ok(chunks.length >= 2, 'the cut input comes in two chunks at least');
    const cut = await outcome(raw, chunks, bufferLimit, maxHeaderSize);
    assert.equal(cut, whole, 'the outcome does not depend on the chunks nor on the path');
    const kind = outcomeClass(whole);
    outcomes.set(kind, (outcomes.get(kind) ?? 0) + 1);
  }

  const bufferLimit = fc.constantFrom(undefined, -1, 0, 16, 100);
  const headerLimit = fc.oneof({ weight: 4, arbitrary: fc.constant(64 * 1024) }, { weight: 1, arbitrary: fc.nat({ max: 200 }) });

  const EXPECTED_OUTCOMES = [
    'passed: PGP/MIME',
    'passed: S/MIME',
    'passed: inline PGP',
    'passed: application/pgp-encrypted',
    'encrypted (encrypted-mime)',
    'encrypted (encrypted-inline)',
    'refused',
  ];

  it('any input, any cut: passed byte for byte or decrypts exactly, whatever the chunks', async () => {
    outcomes.clear();
    const message = fc.oneof({ weight: 3, arbitrary: messageBytes(armored) }, { weight: 2, arbitrary: encryptedMessages(encrypted) });
    await checkProperty('message path', fc.asyncProperty(message, cuts, bufferLimit, headerLimit, property), RUNS);
    console.log(`message path outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`);
    if (!coverageExpected(RUNS)) return;
    for (const kind of EXPECTED_OUTCOMES) assert.ok((outcomes.get(kind) ?? 0) > 0, `some run came out "${kind}"`);
  });

  it('replays the kept counterexamples (test/fuzz/corpus/pipeline-*.json)', async () => {
    let replayed = 0;
    for (const entry of corpusCases('pipeline')) {
      const input = entry.input as { raw: string; cuts: number[]; bufferLimit?: number; maxHeaderSize?: number };
      await property(Buffer.from(input.raw, 'base64'), input.cuts, input.bufferLimit, input.maxHeaderSize);
      replayed += 1;
    }
    assert.equal(replayed, corpusFiles('pipeline').length, 'every kept file replayed');
    assert.ok(replayed > 0, 'pipeline cases are kept: none replayed means the corpus was not found');
  });
});

