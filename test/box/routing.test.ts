import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import { processMessage, type MessageInput } from '../../src/filter/pipeline.js';
import type { BoxDownstream, BoxScheme, Downstream, OutboundEnvelope, RecipientRejections } from '../../src/filter/ports.js';
import { blobIdFor } from '../../src/filter/blob-id.js';
import { errorReply } from '../../src/filter/reply.js';
import { BoxDeliveryError } from '../../src/errors.js';
import type { RoutedRecipient } from '../../src/filter/plan.js';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { loadConfig } from '../../src/config/load.js';
import { MessageFilter } from '../../src/filter/filter.js';
import { createBoxUserDirectory, BoxUserStore } from '../../src/box/users.js';
import { createKeyDirectory } from '../../src/keys/directory.js';
import { KeyStore } from '../../src/keys/store.js';
import { createLogger } from '../../src/log/logger.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { armoredBlock, contentEntity, corpus, pgpMimeMessage } from '../helpers/corpus.js';

async function collect(raw: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of raw) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

class Relay implements Downstream {
  readonly received: Array<{ to: readonly string[]; data: Buffer }> = [];
  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    this.received.push({ to: envelope.to, data: await collect(raw) });
    return new Map();
  }
}

class Box implements BoxDownstream {
  readonly stored = new Map<string, { user: string; scheme: BoxScheme; data: Buffer }>();
  async put(user: string, blobId: string, scheme: BoxScheme, raw: Readable): Promise<void> {
    this.stored.set(blobId, { user, scheme, data: await collect(raw) });
  }
}

const options = { maxHeaderSize: 65536, groupRecipients: true, spoolMemory: 1 << 20, boxScheme: 'openpgp' as const, boxNamespace: 'mx' };
const USER_A = '11111111-1111-4111-8111-111111111111';
const USER_B = '22222222-2222-4222-8222-222222222222';

describe('routing to Incoming Boxes in the pipeline', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;
  let carol: GpgKey;
  const keyOf = async (key: GpgKey) => openpgp.readKey({ armoredKey: key.publicArmored });
  let recipients: RoutedRecipient[];
  const input = (raw: Buffer, queueId = 'Q1'): MessageInput => ({ from: 's@example.net', recipients, body: Readable.from([raw]), use8BitMime: true, queueId });

  before(async () => {
    home = await createGpgHome();
    // One at a time: gpg cannot update one keyring from concurrent processes.
    alice = await generateKey(home, { email: 'alice@example.test' });
    bob = await generateKey(home, { email: 'bob@example.test' });
    carol = await generateKey(home, { email: 'carol@example.test' });
    recipients = [
      { address: 'alice@example.test', lookup: { kind: 'usable', address: 'alice@example.test', style: 'mime', keys: [await keyOf(alice)] }, boxUser: USER_A },
      { address: 'bob@example.test', lookup: { kind: 'usable', address: 'bob@example.test', style: 'mime', keys: [await keyOf(bob)] }, boxUser: USER_B },
      { address: 'carol@example.test', lookup: { kind: 'usable', address: 'carol@example.test', style: 'mime', keys: [await keyOf(carol)] } },
      { address: 'dave@example.test', lookup: { kind: 'none', address: 'dave@example.test' } },
    ];
  });
  after(() => home.remove());

  it('delivers box users the whole message encrypted to them alone, next to reinjected recipients', async () => {
    const relay = new Relay();
    const box = new Box();
    const message = corpus[1]!.raw;
    const result = await processMessage(input(message), { relay, box }, options);
    assert.ok(result.results.every((r) => !r.error));
    assert.equal(result.plan.actions.get('alice@example.test'), 'incoming-box');
    assert.equal(box.stored.size, 2, 'one blob per box user, never grouped');
    for (const [user, key] of [[USER_A, alice], [USER_B, bob]] as const) {
      const blob = [...box.stored.values()].find((b) => b.user === user)!;
      assert.equal(blob.scheme, 'openpgp');
      assert.deepEqual(await listPacketsKeyIds(home, blob.data), [key.encryptionKeyId]);
      assert.deepEqual(await decrypt(home, blob.data), message, 'the whole original message, byte for byte');
    }
    assert.equal(relay.received.length, 2, 'carol (encrypted) and dave (plain) are reinjected');
    assert.deepEqual(await decrypt(home, armoredBlock(relay.received.find((r) => r.to.includes('carol@example.test'))!.data)), contentEntity(message));
    assert.deepEqual(relay.received.find((r) => r.to.includes('dave@example.test'))!.data, message);
  });

  it('without XFORWARD, blob ids use the queue id of the Received field, as the delivery ledger does', async () => {
    const withQueueId = (queueId: string) => Buffer.concat([Buffer.from(`Received: by mx.example.test (Postfix) with ESMTP id ${queueId}\r\n\tfor <alice@example.test>; Mon, 1 Jan 2024 10:00:00 +0000\r\n`), corpus[0]!.raw]);
    const box = new Box();
    const raw = withQueueId('4QXyZ1abc');
    const result = await processMessage({ ...input(raw), queueId: undefined }, { relay: new Relay(), box }, options);
    assert.equal(result.queueId, '4QXyZ1abc');
    const digest = createHash('sha256').update(raw).digest('hex');
    const expected = [USER_A, USER_B].map((user) => blobIdFor({ queueId: '4QXyZ1abc', digest, recipient: user === USER_A ? 'alice@example.test' : 'bob@example.test', namespace: 'mx' }));
    assert.deepEqual([...box.stored.keys()].sort(), expected.sort());
  });

  it('writes the same blob ids when Postfix retries the message, and new ones for a new message', async () => {
    const first = new Box();
    const retry = new Box();
    const resent = new Box();
    await processMessage(input(corpus[0]!.raw, 'QUEUE1'), { relay: new Relay(), box: first }, options);
    await processMessage(input(corpus[0]!.raw, 'QUEUE1'), { relay: new Relay(), box: retry }, options);
    await processMessage(input(corpus[0]!.raw, 'QUEUE2'), { relay: new Relay(), box: resent }, options);
    assert.deepEqual([...retry.stored.keys()].sort(), [...first.stored.keys()].sort());
    assert.equal([...resent.stored.keys()].filter((id) => first.stored.has(id)).length, 0);
    for (const id of first.stored.keys()) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('puts an already encrypted message into the box as it is (scheme raw)', async () => {
    const box = new Box();
    await processMessage(input(pgpMimeMessage), { relay: new Relay(), box }, options);
    const blobs = [...box.stored.values()];
    assert.equal(blobs.length, 2);
    for (const blob of blobs) {
      assert.equal(blob.scheme, 'raw');
      assert.deepEqual(blob.data, pgpMimeMessage);
    }
  });

  it('with scheme openpgp-mime, box copies are PGP/MIME messages', async () => {
    const box = new Box();
    await processMessage(input(corpus[0]!.raw), { relay: new Relay(), box }, { ...options, boxScheme: 'openpgp-mime' });
    const blob = [...box.stored.values()].find((b) => b.user === USER_A)!;
    assert.equal(blob.scheme, 'openpgp-mime');
    assert.match(blob.data.toString('latin1'), /Content-Type: multipart\/encrypted/);
    assert.deepEqual(await decrypt(home, armoredBlock(blob.data)), contentEntity(corpus[0]!.raw));
  });

  it('a box that refuses fails only that recipient', async () => {
    class FullBox extends Box {
      override async put(user: string, blobId: string, scheme: BoxScheme, raw: Readable): Promise<void> {
        if (user === USER_B) {
          raw.resume();
          throw new BoxDeliveryError('Incoming Box answered 507: Quota Exceeded!', 507);
        }
        return super.put(user, blobId, scheme, raw);
      }
    }
    const box = new FullBox();
    const result = await processMessage(input(corpus[0]!.raw), { relay: new Relay(), box }, options);
    const failed = result.results.filter((r) => r.error);
    assert.deepEqual(failed.map((r) => r.copy.recipients), [['bob@example.test']]);
    assert.equal(box.stored.size, 1);
  });

  it('maps box answers to SMTP replies: 507 is mailbox full, 5xx and unreachable are temporary', () => {
    assert.deepEqual(errorReply(new BoxDeliveryError('x', 507)), { code: 452, enhanced: '4.2.2', text: 'mailbox full (Incoming Box quota exceeded), try again later' });
    assert.equal(errorReply(new BoxDeliveryError('x', 404)).code, 550);
    assert.equal(errorReply(new BoxDeliveryError('x', 500)).code, 451);
    assert.equal(errorReply(new BoxDeliveryError('x')).code, 451);
    assert.equal(errorReply(new BoxDeliveryError('x', 401)).enhanced, '4.7.0');
    assert.deepEqual([errorReply(new BoxDeliveryError('x', 400)).code, errorReply(new BoxDeliveryError('x', 400)).enhanced], [451, '4.3.0']);
  });

  it('derives blob ids from queue id, message digest, recipient and namespace', () => {
    const base = { queueId: 'Q', digest: 'd', recipient: 'a@x', namespace: 'mx' };
    assert.equal(blobIdFor(base), blobIdFor({ ...base, recipient: 'A@x' }));
    for (const change of [{ queueId: 'R' }, { digest: 'e' }, { recipient: 'b@x' }, { namespace: 'other' }]) {
      assert.notEqual(blobIdFor({ ...base, ...change }), blobIdFor(base));
    }
    // A delivery tried before the namespace became Soledad's MX and retried after gets the same id (a 409, not a copy).
    assert.equal(blobIdFor({ ...base, namespace: 'MX' }), blobIdFor(base));
    assert.equal(blobIdFor({ ...base, namespace: 'MX' }), '51912d44-4a0f-8e6e-8122-e106564b7ea9', 'as Lacre derived it for mx');
  });
});

for (const backend of await databaseBackends()) {
  describe(`routing recipients to Incoming Boxes at RCPT time (${backend.name})`, () => {
    it('a box mapped for alice@ receives alice+tag@ (keys.recipient_delimiter), with alice’s key; a mapped full address wins', () =>
      withDatabase(backend, async (db) => {
        const home = await createGpgHome();
        try {
          const alice = await generateKey(home, { email: 'alice@example.test' });
          await new KeyStore(db, { local_part_case_sensitive: false }).importKey(alice.publicArmored);
          const users = new BoxUserStore(db);
          await users.add('alice@example.test', USER_A);
          await users.add('alice+work@example.test', USER_B);
          const config = loadConfig({ env: { LACRE_INCOMING_BOX_URL: 'http://127.0.0.1:9', LACRE_INCOMING_BOX_DOMAINS: 'bücher.example' } });
          const keys = await createKeyDirectory(db, config.keys, createLogger('silent'));
          try {
            const filter = new MessageFilter({ keys, downstreams: { relay: new Relay() }, config, boxUsers: createBoxUserDirectory(db) });
            const tagged = await filter.lookupRecipient('alice+news@example.test');
            assert.equal(tagged.address, 'alice+news@example.test', 'the envelope address stays as received');
            assert.equal(tagged.boxUser, USER_A);
            assert.equal(tagged.lookup.kind, 'usable');
            assert.equal((await filter.lookupRecipient('alice+work@example.test')).boxUser, USER_B);
            assert.equal((await filter.lookupRecipient('bob+news@example.test')).boxUser, undefined);
            // A box domain given in Unicode covers its recipients whichever form they come in.
            await assert.rejects(filter.lookupRecipient('x@xn--bcher-kva.example'), (error: Error) => errorReply(error).code === 550);
          } finally {
            await keys.close();
          }
        } finally {
          await home.remove();
        }
      }));
  });
}
