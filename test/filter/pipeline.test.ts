import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { watch } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import * as openpgp from 'openpgp';
import { BUFFERED_MESSAGE_LIMIT, processMessage, type MessageInput, type FilterOptions } from '../../src/filter/pipeline.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../../src/filter/ports.js';
import type { RecipientKeys } from '../../src/keys/types.js';
import { RelayError, StreamedCopyError } from '../../src/errors.js';
import { abortedRecipientReplies } from '../../src/filter/reply.js';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { armoredBlock, contentEntity, corpus, inlinePgpMessage, nonContentHeaderLines, pgpMimeMessage, smimeMessage } from '../helpers/corpus.js';
import { youngCollections } from '../../src/util/young-gc.js';
import { EncryptionPool } from '../../src/crypto/pool.js';
import { isDataSafe } from '../../src/mime/data-safe.js';
import { createSmimeIdentity, opensslAvailable, smimeMessage as smimeFromOpenssl } from '../helpers/smime.js';

const hasOpenssl = await opensslAvailable();

interface Received {
  envelope: OutboundEnvelope;
  data: Buffer;
}

/** Collects each copy's bytes as a downstream would receive them. */
class CollectingDownstream implements Downstream {
  readonly received: Received[] = [];
  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    const chunks: Buffer[] = [];
    for await (const chunk of raw) chunks.push(chunk as Buffer);
    this.received.push({ envelope, data: Buffer.concat(chunks) });
    return new Map();
  }
  copyFor(address: string): Buffer {
    const found = this.received.find((r) => r.envelope.to.includes(address));
    assert.ok(found, `no copy for ${address}`);
    return found.data;
  }
}

/** Every copy goes to the relay here; Incoming Box copies are tested in test/box and test/e2e/incoming-box.test.ts. */
const run = (input: MessageInput, relay: Downstream, opts: FilterOptions) => processMessage(input, { relay }, opts);

const options = { maxHeaderSize: 64 * 1024, groupRecipients: false, spoolMemory: 1024 * 1024 };

/** The message failed because a copy streaming to the relay did, with an error of this class. */
function streamedCopyFailedWith(cause: new (...args: never[]) => Error): (error: unknown) => boolean {
  return (error) => error instanceof StreamedCopyError && error.cause instanceof cause;
}

function chunked(raw: Buffer, size = 7): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < raw.length; i += size) parts.push(raw.subarray(i, i + size));
  return Readable.from(parts);
}

describe('pipeline', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;
  let aliceKey: openpgp.PublicKey;
  let bobKey: openpgp.PublicKey;
  const usable = (address: string, key: openpgp.PublicKey, style: 'mime' | 'inline' = 'mime'): RecipientKeys => ({ kind: 'usable', address, style, keys: [key] });
  const none = (address: string): RecipientKeys => ({ kind: 'none', address });
  const input = (raw: Buffer, recipients: MessageInput['recipients']): MessageInput => ({
    from: 'sender@example.net',
    recipients,
    body: chunked(raw),
    use8BitMime: true,
  });

  /** The pieces Alice's copy reaches the relay in, as read from the copy's stream. */
  const piecesReachingRelay = async (raw: Buffer, opts: FilterOptions): Promise<Buffer[]> => {
    const pieces: Buffer[] = [];
    const keeping: Downstream = {
      async send(_envelope, copy) {
        for await (const piece of copy) pieces.push(piece as Buffer);
        return new Map();
      },
    };
    await run(input(raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), keeping, opts);
    return pieces;
  };

  /** A big message in 64 KiB pieces to Carol (no key: the plain copy) and Alice (keyed). */
  const streamedToCarolAndAlice = (raw: Buffer): MessageInput => ({
    ...input(raw, [
      { address: 'carol@example.test', lookup: none('carol@example.test') },
      { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
    ]),
    body: chunked(raw, 65536),
  });

  /** Alice's PGP/MIME copy streams straight to the relay (the only one of its kind); Bob's inline copy spools. */
  const streamedToAliceAndBobInline = (raw: Buffer): MessageInput => ({
    ...input(raw, [
      { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
      { address: 'bob@example.test', lookup: usable('bob@example.test', bobKey, 'inline') },
    ]),
    body: chunked(raw, 65536),
  });

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    bob = await generateKey(home, { email: 'bob@example.test', algo: 'rsa3072' });
    aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    bobKey = await openpgp.readKey({ armoredKey: bob.publicArmored });
  });
  after(() => home.remove());

  for (const [path, bufferLimit] of [['in memory', undefined], ['streamed', -1]] as const) for (const message of corpus) {
    it(`${path}: PGP/MIME copy of "${message.name}" decrypts with gpg to the exact content entity`, async () => {
      const downstream = new CollectingDownstream();
      const result = await run(input(message.raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), downstream, { ...options, bufferLimit });
      assert.equal(result.results.length, 1);
      assert.equal(result.results[0]!.error, undefined);
      const copy = downstream.copyFor('alice@example.test');
      assert.deepEqual(await decrypt(home, armoredBlock(copy)), contentEntity(message.raw));
      const outer = Buffer.concat(nonContentHeaderLines(message.raw));
      const withEol = outer.length > 0 && outer[outer.length - 1] !== 0x0a ? Buffer.concat([outer, Buffer.from('\r\n')]) : outer;
      assert.deepEqual(copy.subarray(0, withEol.length), withEol, 'outer header lines kept byte for byte, in order');
      const added = copy.subarray(withEol.length).toString('latin1');
      assert.match(added, /^(MIME-Version: 1\.0\r?\n)?Content-Type: multipart\/encrypted; protocol="application\/pgp-encrypted";/);
    });

    it(`${path}: plain recipient of "${message.name}" gets the identical bytes`, async () => {
      const downstream = new CollectingDownstream();
      await run(input(message.raw, [{ address: 'carol@example.test', lookup: none('carol@example.test') }]), downstream, { ...options, bufferLimit });
      assert.deepEqual(downstream.copyFor('carol@example.test'), message.raw);
    });
  }

  for (const [name, raw] of [['PGP/MIME', pgpMimeMessage], ['inline PGP', inlinePgpMessage], ['S/MIME', smimeMessage]] as const) {
    it(`passes an already encrypted ${name} message through untouched, even to a keyed recipient`, async () => {
      const downstream = new CollectingDownstream();
      const result = await run(input(raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), downstream, options);
      assert.deepEqual(downstream.copyFor('alice@example.test'), raw);
      assert.equal(result.plan.actions.get('alice@example.test'), 'already-encrypted');
    });
  }

  it('encrypts an S/MIME signed-only message (it is not encrypted)', { skip: !hasOpenssl && 'needs openssl' }, async () => {
    const identity = await createSmimeIdentity('sender@example.net');
    const signed = await smimeFromOpenssl(identity, 'signed', Buffer.from('Content-Type: text/plain\r\n\r\nSigned, not sealed.\r\n')).finally(() => identity.remove());
    const raw = Buffer.concat([Buffer.from('From: sender@example.net\r\nTo: alice@example.test\r\n'), signed]);
    assert.match(raw.toString('latin1'), /smime-type="?signed-data/);
    const downstream = new CollectingDownstream();
    await run(input(raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), downstream, options);
    assert.deepEqual(await decrypt(home, armoredBlock(downstream.copyFor('alice@example.test'))), contentEntity(raw));
  });

  it('gives each keyed recipient a copy naming only their own key (Bcc privacy), and plain recipients the original', async () => {
    const downstream = new CollectingDownstream();
    const message = corpus[1]!.raw;
    await run(
      input(message, [
        { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
        { address: 'bob@example.test', lookup: usable('bob@example.test', bobKey) },
        { address: 'carol@example.test', lookup: none('carol@example.test') },
      ]),
      downstream,
      options,
    );
    assert.equal(downstream.received.length, 3);
    for (const r of downstream.received) assert.equal(r.envelope.to.length, 1, 'one recipient per copy');
    const aliceCopy = armoredBlock(downstream.copyFor('alice@example.test'));
    const bobCopy = armoredBlock(downstream.copyFor('bob@example.test'));
    assert.deepEqual(await listPacketsKeyIds(home, aliceCopy), [alice.encryptionKeyId]);
    assert.deepEqual(await listPacketsKeyIds(home, bobCopy), [bob.encryptionKeyId]);
    assert.deepEqual(await decrypt(home, aliceCopy), contentEntity(message));
    assert.deepEqual(await decrypt(home, bobCopy), contentEntity(message));
    assert.deepEqual(downstream.copyFor('carol@example.test'), message);
  });

  it('groups keyed recipients of one style into one copy when asked', async () => {
    const downstream = new CollectingDownstream();
    await run(
      input(corpus[0]!.raw, [
        { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
        { address: 'bob@example.test', lookup: usable('bob@example.test', bobKey) },
      ]),
      downstream,
      { ...options, groupRecipients: true },
    );
    assert.equal(downstream.received.length, 1);
    assert.deepEqual([...downstream.received[0]!.envelope.to].sort(), ['alice@example.test', 'bob@example.test']);
    const ids = await listPacketsKeyIds(home, armoredBlock(downstream.received[0]!.data));
    assert.deepEqual(ids.sort(), [alice.encryptionKeyId, bob.encryptionKeyId].sort());
  });

  for (const [path, bufferLimit] of [['in memory', undefined], ['streamed', -1]] as const) it(`${path}: inline style encrypts the decoded text body as one armored block`, async () => {
    const qp = corpus.find((m) => m.name === 'quoted-printable text')!.raw;
    const downstream = new CollectingDownstream();
    const result = await run(input(qp, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey, 'inline') }]), downstream, { ...options, bufferLimit });
    assert.equal(result.plan.actions.get('alice@example.test'), 'encrypted-inline');
    const copy = downstream.copyFor('alice@example.test');
    const decrypted = await decrypt(home, armoredBlock(copy));
    assert.equal(decrypted.toString('latin1'), 'Grüße aus Köln, a long line that is soft broken.\r\n');
    const head = copy.toString('latin1').split('\r\n\r\n')[0]!;
    assert.match(head, /Content-Type: text\/plain; charset=iso-8859-1/);
    assert.doesNotMatch(head, /Content-Transfer-Encoding/i);
  });

  // Found by test/fuzz (corpus/pipeline-base64-dash.json): Node's base64 decoder takes '-' and '_' for base64url
  // digits, so a small message's inline copy decoded them while a streamed one skipped them (RFC 2045 §6.8).
  for (const [path, bufferLimit] of [['in memory', undefined], ['streamed', -1]] as const) it(`${path}: inline style skips what is not base64 in a base64 body, '-' and '_' too`, async () => {
    const raw = Buffer.from('Content-Transfer-Encoding: base64\r\n\r\naGVs-bG8_\r\n-----\r\n');
    const downstream = new CollectingDownstream();
    await run(input(raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey, 'inline') }]), downstream, { ...options, bufferLimit });
    assert.equal((await decrypt(home, armoredBlock(downstream.copyFor('alice@example.test')))).toString('latin1'), 'hello');
  });

  it('inline style falls back to PGP/MIME for a multipart message', async () => {
    const downstream = new CollectingDownstream();
    const result = await run(input(corpus[1]!.raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey, 'inline') }]), downstream, options);
    assert.equal(result.plan.actions.get('alice@example.test'), 'encrypted-mime');
    assert.deepEqual(await decrypt(home, armoredBlock(downstream.copyFor('alice@example.test'))), contentEntity(corpus[1]!.raw));
  });

  it('a message held in memory reaches the relay as one piece marked safe for DATA, from this thread and from a worker', async () => {
    const raw = Buffer.from('From: s@example.net\r\nContent-Type: text/plain\r\n\r\nhello\r\n');
    const pool = new EncryptionPool(1, { inThreadLimit: 0 }); // every message to the worker
    try {
      for (const encryptor of [undefined, pool]) {
        const pieces = await piecesReachingRelay(raw, { ...options, encryptor });
        assert.equal(pieces.length, 1, 'headers, armor and MIME parts in one write');
        assert.ok(isDataSafe(pieces[0]!), encryptor ? 'from the worker' : 'from this thread');
        assert.match(pieces[0]!.toString('latin1'), /^From: s@example.net\r\n[^]*-----BEGIN PGP MESSAGE-----[^]*--\r\n$/);
      }
    } finally {
      await pool.close();
    }
  });

  it('a message held in memory whose header needs escaping keeps its armor apart, still marked safe', async () => {
    const raw = Buffer.from('From: s@example.net\r\nX-Odd: bare\nLF\r\nContent-Type: text/plain\r\n\r\nhello\r\n');
    const pieces = await piecesReachingRelay(raw, options);
    const armor = pieces.filter((piece) => piece.includes('-----BEGIN PGP MESSAGE-----'));
    assert.equal(armor.length, 1);
    assert.ok(isDataSafe(armor[0]!));
    assert.ok(armor[0]!.toString('latin1').startsWith('-----BEGIN PGP MESSAGE-----'), 'the armor alone, not joined to the header around it');
    assert.ok(!isDataSafe(pieces[0]!), 'the header is examined on its way into DATA');
  });

  it('spills big ciphertext shared by two copies to the spool directory; each still decrypts exactly', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 'abcdefghij\r\n');
    const raw = Buffer.concat([Buffer.from('From: s@example.net\r\nContent-Type: text/plain\r\n\r\n'), body]);
    const downstream = new CollectingDownstream();
    const spoolDir = await mkdtemp(join(tmpdir(), 'lacre-spool-'));
    const spilled: string[] = [];
    const watcher = watch(spoolDir, (_event, name) => name && spilled.push(name));
    try {
      const recipients = [
        { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
        { address: 'bob@example.test', lookup: usable('bob@example.test', bobKey) },
      ];
      const collectionsBefore = youngCollections();
      await run({ ...input(raw, recipients), body: chunked(raw, 65536) }, downstream, { ...options, spoolMemory: 64 * 1024, spoolDir });
      // 3 MB read once and 3 MB read back twice from the spool: a young-generation collection every 2 MB of it.
      assert.ok(youngCollections() - collectionsBefore >= 4, `${youngCollections() - collectionsBefore} collections`);
    } finally {
      watcher.close();
      await rm(spoolDir, { recursive: true, force: true });
    }
    assert.ok(spilled.length > 0, 'the ciphertext went through a spool file');
    assert.deepEqual(await decrypt(home, armoredBlock(downstream.copyFor('alice@example.test'))), contentEntity(raw));
    assert.deepEqual(await decrypt(home, armoredBlock(downstream.copyFor('bob@example.test'))), contentEntity(raw));
  });

  it('a big message with one encrypted copy streams it out while the input is read, with no spool file', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 'abcdefghij\r\n');
    const raw = Buffer.concat([Buffer.from('From: s@example.net\r\nContent-Type: text/plain\r\n\r\n'), body]);
    const spoolDir = await mkdtemp(join(tmpdir(), 'lacre-spool-'));
    const spilled: string[] = [];
    const watcher = watch(spoolDir, (_event, name) => name && spilled.push(name));
    let inputRead = false;
    let outputBeforeInputEnd = false;
    const downstream = new (class extends CollectingDownstream {
      override async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
        raw.once('data', () => (outputBeforeInputEnd = !inputRead));
        return super.send(envelope, raw);
      }
    })();
    async function* source() {
      yield* chunked(raw, 65536);
      inputRead = true;
    }
    try {
      const collectionsBefore = youngCollections();
      await run({ ...input(raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), body: Readable.from(source()) }, downstream, { ...options, spoolMemory: 64 * 1024, spoolDir });
      assert.ok(youngCollections() > collectionsBefore, 'a young-generation collection while 3 MB streamed');
      assert.deepEqual(await readdir(spoolDir), []);
      assert.deepEqual(spilled, [], 'no spool file was ever created (dispose() would have removed it by now)');
    } finally {
      watcher.close();
      await rm(spoolDir, { recursive: true, force: true });
    }
    assert.ok(outputBeforeInputEnd, 'the copy started before the input ended');
    assert.deepEqual(await decrypt(home, armoredBlock(downstream.copyFor('alice@example.test'))), contentEntity(raw));
  });

  it('a streamed message whose directly streamed encrypted copy fails mid-way fails as a whole, without hanging', async () => {
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(BUFFERED_MESSAGE_LIMIT * 8, 'line\r\n')]);
    const downstream = new CollectingDownstream();
    const failing = new (class extends CollectingDownstream {
      override async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
        if (envelope.to.includes('alice@example.test')) {
          for await (const _ of raw) break; // the relay drops the connection after the first piece
          throw new RelayError('connection lost', false);
        }
        return downstream.send(envelope, raw);
      }
    })();
    await assert.rejects(
      run(
        streamedToAliceAndBobInline(big),
        failing,
        options,
      ),
      streamedCopyFailedWith(RelayError),
    );
    assert.equal(downstream.received.length, 0, 'the spooled copy for Bob was not sent either');
  });

  it('a client that vanishes while a copy waits for its relay connection: nothing is delivered, the process goes on', async () => {
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\nContent-Type: text/plain\r\n\r\n'), Buffer.alloc(BUFFERED_MESSAGE_LIMIT * 4, 'line\r\n')]);
    async function* clientVanishes() {
      yield* chunked(big.subarray(0, BUFFERED_MESSAGE_LIMIT * 2), 65536);
      throw new Error('the client went away');
    }
    const uncaught: Error[] = [];
    const record = (error: Error) => uncaught.push(error);
    process.on('uncaughtException', record);
    const slowToListen = new (class extends CollectingDownstream {
      override async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
        await new Promise((resolve) => setTimeout(resolve, 100)); // the copy is destroyed meanwhile
        return super.send(envelope, raw);
      }
    })();
    try {
      const carol = { address: 'carol@example.test', lookup: none('carol@example.test') };
      await assert.rejects(run({ ...input(big, [carol]), body: Readable.from(clientVanishes()) }, slowToListen, options), /went away/);
      await new Promise((resolve) => setTimeout(resolve, 150));
    } finally {
      process.off('uncaughtException', record);
    }
    assert.deepEqual(uncaught.map((error) => error.message), []);
    assert.equal(slowToListen.received.length, 0);
  });

  it('a big message to a plain and a keyed recipient completes through a relay with one connection', { timeout: 30_000 }, async () => {
    // relay.max_connections = 1: a second copy streaming while the input is read would wait forever.
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\nContent-Type: text/plain\r\n\r\n'), Buffer.alloc(4 * 1024 * 1024, 'line\r\n')]);
    const oneConnection = new (class extends CollectingDownstream {
      private busy: Promise<unknown> = Promise.resolve();
      override send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
        const turn = this.busy.then(() => super.send(envelope, raw));
        this.busy = turn.catch(() => undefined);
        return turn;
      }
    })();
    await run(streamedToCarolAndAlice(big), oneConnection, options);
    assert.deepEqual(oneConnection.copyFor('carol@example.test'), big);
    assert.deepEqual(await decrypt(home, armoredBlock(oneConnection.copyFor('alice@example.test'))), contentEntity(big));
  });

  it('a streamed message that turns out too large: the encrypted copy streaming out is never completed', async () => {
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(BUFFERED_MESSAGE_LIMIT * 4, 'line\r\n')]);
    const downstream = new CollectingDownstream();
    let started = false;
    const watching = new (class extends CollectingDownstream {
      override async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
        started = true;
        return downstream.send(envelope, raw);
      }
    })();
    await assert.rejects(
      run({ ...input(big, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), body: chunked(big, 65536), sizeExceeded: () => true }, watching, options),
      /max_size/,
    );
    assert.ok(started, 'the copy had started');
    assert.equal(downstream.received.length, 0, 'and was not completed');
  });

  it('rejects a header block over the limit', async () => {
    const raw = Buffer.from(`From: a@b\r\nX-Big: ${'x'.repeat(200 * 1024)}\r\n\r\nbody\r\n`);
    await assert.rejects(
      run(input(raw, [{ address: 'carol@example.test', lookup: none('carol@example.test') }]), new CollectingDownstream(), options),
      /header block exceeds/,
    );
  });

  class FailingDownstream extends CollectingDownstream {
    override async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
      if (envelope.to.includes('carol@example.test')) {
        raw.resume();
        throw new RelayError('relay down', false);
      }
      return super.send(envelope, raw);
    }
  }

  it('a small message: a failing copy fails only its recipients, the others are delivered', async () => {
    const downstream = new FailingDownstream();
    const result = await run(
      input(corpus[0]!.raw, [
        { address: 'carol@example.test', lookup: none('carol@example.test') },
        { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
      ]),
      downstream,
      options,
    );
    assert.deepEqual(result.results.filter((r) => r.error).map((r) => r.copy.recipients), [['carol@example.test']]);
    assert.ok(result.results.find((r) => r.copy.recipients.includes('carol@example.test'))!.error instanceof RelayError);
    assert.deepEqual(downstream.received.map((r) => r.envelope.to), [['alice@example.test']]);
  });

  it('a streamed message: a failing plain copy fails the message before any encrypted copy is sent', async () => {
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(BUFFERED_MESSAGE_LIMIT * 2, 'line\r\n')]);
    const downstream = new FailingDownstream();
    await assert.rejects(
      run(
        streamedToCarolAndAlice(big),
        downstream,
        options,
      ),
      streamedCopyFailedWith(RelayError),
    );
    assert.equal(downstream.received.length, 0, 'nothing was delivered');
  });

  it('a streamed copy refused for good fails the message; LMTP refuses its recipients and defers the others', async () => {
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(BUFFERED_MESSAGE_LIMIT * 4, 'line\r\n')]);
    const refusing = new (class extends CollectingDownstream {
      override async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
        if (envelope.to.includes('alice@example.test')) {
          raw.resume();
          throw new RelayError('550 5.1.1 no such user', true, 550);
        }
        return super.send(envelope, raw);
      }
    })();
    const recipients = ['alice@example.test', 'bob@example.test'];
    const failure = await run(
      streamedToAliceAndBobInline(big),
      refusing,
      options,
    ).then(() => assert.fail('the message should have failed'), (error: unknown) => error);
    assert.ok(streamedCopyFailedWith(RelayError)(failure));
    assert.deepEqual((failure as StreamedCopyError).recipients, ['alice@example.test']);
    const [alice, bob] = abortedRecipientReplies(recipients, failure);
    assert.equal(alice!.code, 554, 'the refused copy keeps its permanent answer');
    assert.deepEqual([bob!.code, bob!.enhanced], [451, '4.3.0'], 'the other recipient is deferred, not bounced');
    assert.equal(refusing.received.length, 0);
    // An error that no streamed copy raised answers every recipient alike.
    assert.deepEqual(abortedRecipientReplies(recipients, new RelayError('down', true)).map((reply) => reply.code), [554, 554]);
  });

  it('a failing plain copy is remembered with its recipients too', async () => {
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(BUFFERED_MESSAGE_LIMIT * 2, 'line\r\n')]);
    const failure = await run(streamedToCarolAndAlice(big), new FailingDownstream(), options).then(() => assert.fail('should fail'), (error: unknown) => error);
    assert.ok(failure instanceof StreamedCopyError);
    assert.deepEqual(failure.recipients, ['carol@example.test']);
  });

  for (const [path, bufferLimit] of [['in memory', undefined], ['streamed', -1]] as const) it(`${path}: an encryption failure delivers nothing, not even the plain copy`, async () => {
    const signOnly = await generateKey(home, { email: 'signer@example.test', signOnly: true });
    const brokenKey = await openpgp.readKey({ armoredKey: signOnly.publicArmored });
    const downstream = new CollectingDownstream();
    // Alice's PGP/MIME copy is set up first, then the signer's inline copy fails.
    await assert.rejects(
      run(
        input(corpus[0]!.raw, [
          { address: 'carol@example.test', lookup: none('carol@example.test') },
          { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
          { address: 'signer@example.test', lookup: usable('signer@example.test', brokenKey, 'inline') },
        ]),
        downstream,
        { ...options, bufferLimit },
      ),
      /encryption key/i,
    );
    assert.equal(downstream.received.length, 0);
  });

  it('a message that turns out too large delivers nothing', async () => {
    const downstream = new CollectingDownstream();
    await assert.rejects(
      run({ ...input(corpus[0]!.raw, [{ address: 'carol@example.test', lookup: none('carol@example.test') }]), sizeExceeded: () => true }, downstream, options),
      /max_size/,
    );
    assert.equal(downstream.received.length, 0);
  });

  it('no plaintext of the body appears in an encrypted copy', async () => {
    const downstream = new CollectingDownstream();
    const raw = Buffer.from('From: s@example.net\r\nSubject: visible subject\r\n\r\nTOP-SECRET-BODY-TEXT\r\n');
    await run(input(raw, [{ address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) }]), downstream, options);
    const copy = await text(Readable.from([downstream.copyFor('alice@example.test')]));
    assert.doesNotMatch(copy, /TOP-SECRET-BODY-TEXT/);
  });
});
