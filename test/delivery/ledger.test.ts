import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import { processMessage, type FilterOptions, type MessageInput } from '../../src/filter/pipeline.js';
import type { DeliveryLedger, Downstream, OutboundEnvelope, RecipientRejections } from '../../src/filter/ports.js';
import { messageReply } from '../../src/filter/reply.js';
import { headerDigest } from '../../src/filter/delivered.js';
import { DeliveredCopies } from '../../src/delivery/ledger.js';
import { RelayError } from '../../src/errors.js';
import type { RecipientKeys } from '../../src/keys/types.js';
import type { Database } from '../../src/db/types.js';
import { createGpgHome, generateKey, type GpgHome } from '../helpers/gpg.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';

const backends = await databaseBackends();
const DIGEST_A = 'a'.repeat(64);
const DIGEST_B = 'b'.repeat(64);

/** Accepts every copy, except (once each) the copies for the recipients in `failOnce`, which get a 451. */
class FlakyRelay implements Downstream {
  readonly sent: string[][] = [];
  constructor(private readonly failOnce: Set<string> = new Set()) {}
  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    for await (const _chunk of raw);
    const failing = envelope.to.find((rcpt) => this.failOnce.delete(rcpt));
    if (failing !== undefined) throw new RelayError('relay: 451 try later', false, 451);
    this.sent.push([...envelope.to]);
    return new Map();
  }
}

/** A message as Postfix hands it over: its topmost Received field names the queue id. */
function postfixMessage(queueId: string, received = 'Mon, 1 Jan 2024 10:00:00 +0000', bodyBytes = 200): Buffer {
  return Buffer.from(
    `Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example.test (Postfix) with ESMTP id ${queueId}\r\n\tfor <alice@example.test>; ${received}\r\n` +
      'From: s@example.net\r\nTo: alice@example.test, bob@example.test, carol@example.test\r\nSubject: ledger\r\nMessage-ID: <ledger@example.net>\r\n\r\n' +
      `${'body line of the message\r\n'.repeat(Math.ceil(bodyBytes / 26))}`,
  );
}

describe('delivery ledger', () => {
  let home: GpgHome;
  let aliceKey: openpgp.PublicKey;
  let bobKey: openpgp.PublicKey;
  const usable = (address: string, key: openpgp.PublicKey): RecipientKeys => ({ kind: 'usable', address, style: 'mime', keys: [key] });
  let recipients: MessageInput['recipients'];
  const input = (raw: Buffer, queueId?: string): MessageInput => ({ from: 's@example.net', recipients, body: Readable.from([raw]), use8BitMime: true, queueId });

  before(async () => {
    home = await createGpgHome();
    aliceKey = await openpgp.readKey({ armoredKey: (await generateKey(home, { email: 'alice@example.test' })).publicArmored });
    bobKey = await openpgp.readKey({ armoredKey: (await generateKey(home, { email: 'bob@example.test' })).publicArmored });
    recipients = [
      { address: 'alice@example.test', lookup: usable('alice@example.test', aliceKey) },
      { address: 'bob@example.test', lookup: usable('bob@example.test', bobKey) },
      { address: 'carol@example.test', lookup: { kind: 'none', address: 'carol@example.test' } },
    ];
  });
  after(() => home.remove());

  const rowCount = async (db: Database) => Number((await db.query<{ n: number }>('select count(*)::int as n from lacre_delivered_copies'))[0]!.n);

  for (const backend of backends) {
    describe(backend.name, () => {
      it('records recipients once per message, tells them apart by digest, and purges old rows', () =>
        withDatabase(backend, async (db) => {
          const ledger = new DeliveredCopies(db);
          await ledger.record('4QXyZ1abc', DIGEST_A, ['alice@example.test', 'bob@example.test']);
          await ledger.record('4QXyZ1abc', DIGEST_A, ['alice@example.test']);
          assert.deepEqual(await ledger.delivered('4QXyZ1abc', DIGEST_A, ['alice@example.test', 'carol@example.test']), new Set(['alice@example.test']));
          assert.deepEqual(await ledger.delivered('4QXyZ1abc', DIGEST_B, ['alice@example.test']), new Set());
          assert.deepEqual(await ledger.delivered('OTHERQID', DIGEST_A, ['alice@example.test']), new Set());
          assert.equal(await rowCount(db), 2);
          await db.query(`update lacre_delivered_copies set delivered_at = now() - interval '3 hours' where recipient = 'bob@example.test'`);
          assert.equal(await ledger.purge(2), 1);
          assert.equal(await ledger.purge(2), 0);
          assert.deepEqual(await ledger.delivered('4QXyZ1abc', DIGEST_A, ['alice@example.test', 'bob@example.test']), new Set(['alice@example.test']));
        }));

      it('reads and writes what arrives while a statement is in flight in one statement; a failed one fails only its own', () =>
        withDatabase(backend, async (db) => {
          let inserts = 0;
          let selects = 0;
          let failNext = false;
          const counted: Database = Object.assign(Object.create(db) as Database, {
            query: (sql: string, params?: unknown[]) => {
              if (/^\s*select .* from lacre_delivered_copies/s.test(sql)) selects += 1;
              if (/insert into lacre_delivered_copies/.test(sql)) {
                inserts += 1;
                if (failNext) return ((failNext = false), Promise.reject(new Error('database down')));
              }
              return db.query(sql, params);
            },
          });
          const ledger = new DeliveredCopies(counted);
          const recipientsOf = (n: number) => [`r${n}a@example.test`, `r${n}b@example.test`];
          await Promise.all(Array.from({ length: 20 }, (_, n) => ledger.record(`Q${n}`, DIGEST_A, recipientsOf(n))));
          assert.equal(await rowCount(db), 40, 'every record is written');
          assert.equal(inserts, 2, 'the first record alone, then the 19 that waited for it together');
          const found = await Promise.all(Array.from({ length: 20 }, (_, n) => ledger.delivered(`Q${n}`, n % 2 ? DIGEST_A : DIGEST_B, [...recipientsOf(n), 'z@example.test'])));
          assert.deepEqual(found, Array.from({ length: 20 }, (_, n) => new Set(n % 2 ? recipientsOf(n) : [])), 'each message its own recipients, by queue id and digest');
          assert.equal(selects, 2, 'the first read alone, then the 19 that waited for it together');

          failNext = true;
          const outcomes = await Promise.allSettled([ledger.record('F1', DIGEST_B, ['x@example.test']), ledger.record('F2', DIGEST_B, ['y@example.test'])]);
          assert.deepEqual(outcomes.map((outcome) => outcome.status), ['rejected', 'fulfilled'], 'the failed statement held only the first record');
          await ledger.record('F3', DIGEST_B, ['x@example.test', 'x@example.test']);
          assert.deepEqual(await ledger.delivered('F3', DIGEST_B, ['x@example.test']), new Set(['x@example.test']), 'writing goes on after a failure');
          assert.equal(await rowCount(db), 42);
        }));

      it('purges a backlog in statements of a bounded size', () =>
        withDatabase(backend, async (db) => {
          let deletes = 0;
          const counted: Database = Object.assign(Object.create(db) as Database, {
            query: (sql: string, params?: unknown[]) => ((deletes += /delete from lacre_delivered_copies/.test(sql) ? 1 : 0), db.query(sql, params)),
          });
          const ledger = new DeliveredCopies(counted, 2);
          await ledger.record('QOLD', DIGEST_A, ['a@x.test', 'b@x.test', 'c@x.test', 'd@x.test', 'e@x.test']);
          await ledger.record('QNEW', DIGEST_A, ['f@x.test']);
          await db.query(`update lacre_delivered_copies set delivered_at = now() - interval '3 hours' where queue_id = 'QOLD'`);
          assert.equal(await ledger.purge(2), 5);
          assert.equal(deletes, 3, '2 + 2 + 1 rows');
          assert.equal(await rowCount(db), 1, 'the recent copy stays');
        }));

      it('reads only the rows of the recipients asked about: a transaction of a message to many reads no more than its own', () =>
        withDatabase(backend, async (db) => {
          let rowsRead = 0;
          const counted: Database = Object.assign(Object.create(db) as Database, {
            query: async (sql: string, params?: unknown[]) => {
              const rows = await db.query(sql, params);
              if (/^\s*select .* from lacre_delivered_copies/s.test(sql)) rowsRead += rows.length;
              return rows;
            },
          });
          const ledger = new DeliveredCopies(counted);
          const many = Array.from({ length: 200 }, (_, n) => `r${n}@example.test`);
          await ledger.record('QMANY', DIGEST_A, many);
          assert.deepEqual(await ledger.delivered('QMANY', DIGEST_A, ['r7@example.test', 'new@example.test']), new Set(['r7@example.test']));
          assert.equal(rowsRead, 1, 'one row read, not the 200 of the queue id');
        }));

      for (const [path, bufferLimit] of [['in memory', undefined], ['streamed', -1]] as const) {
        it(`${path}: a retried message skips the recipients already accepted; another digest with the same queue id does not`, () =>
          withDatabase(backend, async (db) => {
            const options: FilterOptions = { maxHeaderSize: 64 * 1024, groupRecipients: false, spoolMemory: 1024 * 1024, bufferLimit };
            const ledger = new DeliveredCopies(db);
            const raw = postfixMessage('4QXyZ1abc');
            const relay = new FlakyRelay(new Set(['bob@example.test']));
            const first = await processMessage(input(raw), { relay, ledger }, options);
            assert.equal(first.queueId, '4QXyZ1abc');
            assert.equal(messageReply(first).code, 451, 'Bob’s copy failed: Postfix retries the message');
            assert.deepEqual(relay.sent.flat().sort(), ['alice@example.test', 'carol@example.test']);
            const digest = headerDigest(raw.subarray(0, raw.indexOf('\r\n\r\n') + 2));
            assert.deepEqual(await ledger.delivered('4QXyZ1abc', digest, ['alice@example.test', 'bob@example.test', 'carol@example.test']), new Set(['alice@example.test', 'carol@example.test']));

            relay.sent.length = 0;
            const retry = await processMessage(input(raw), { relay, ledger }, options);
            assert.equal(messageReply(retry).code, 250);
            assert.deepEqual(relay.sent, [['bob@example.test']], 'only Bob’s copy goes out again');
            assert.equal(retry.plan.actions.get('alice@example.test'), 'already-delivered');
            assert.equal(retry.plan.actions.get('carol@example.test'), 'already-delivered');
            assert.deepEqual(retry.ledgerErrors, []);

            relay.sent.length = 0;
            const again = await processMessage(input(raw), { relay, ledger }, options);
            assert.equal(messageReply(again).code, 250);
            assert.deepEqual(relay.sent, [], 'everything delivered: nothing goes out');

            const other = await processMessage(input(postfixMessage('4QXyZ1abc', 'Tue, 2 Jan 2024 10:00:00 +0000')), { relay, ledger }, options);
            assert.equal(messageReply(other).code, 250);
            assert.deepEqual(relay.sent.flat().sort(), ['alice@example.test', 'bob@example.test', 'carol@example.test'], 'another message under a reused queue id is sent whole');
          }));
      }

      it('without a queue id nothing is skipped and nothing recorded; XFORWARD IDENT wins over the Received field', () =>
        withDatabase(backend, async (db) => {
          const options: FilterOptions = { maxHeaderSize: 64 * 1024, groupRecipients: false, spoolMemory: 1024 * 1024 };
          const ledger = new DeliveredCopies(db);
          const relay = new FlakyRelay();
          const anonymous = Buffer.from('From: s@example.net\r\nSubject: no queue id\r\n\r\nbody\r\n');
          await processMessage(input(anonymous), { relay, ledger }, options);
          await processMessage(input(anonymous), { relay, ledger }, options);
          assert.equal(relay.sent.flat().length, 6);
          assert.equal(await rowCount(db), 0);
          await processMessage(input(postfixMessage('4QXyZ1abc'), 'XFWDIDENT1'), { relay, ledger }, options);
          const rows = await db.query<{ queue_id: string }>('select distinct queue_id from lacre_delivered_copies');
          assert.deepEqual(rows.map((row) => row.queue_id), ['XFWDIDENT1']);
        }));
    });
  }

  it('a message to one recipient is looked up but never recorded: delivered whole or not at all, no retry needs it', async () => {
    const options: FilterOptions = { maxHeaderSize: 64 * 1024, groupRecipients: false, spoolMemory: 1024 * 1024 };
    const calls: string[] = [];
    const counting: DeliveryLedger = {
      delivered: async () => (calls.push('delivered'), new Set()),
      record: async () => void calls.push('record'),
    };
    const relay = new FlakyRelay();
    const one = (address: string): MessageInput => ({ ...input(postfixMessage('4QXyZ1abc')), recipients: recipients.filter((r) => r.address === address) });
    for (const address of ['alice@example.test', 'carol@example.test']) {
      assert.equal(messageReply(await processMessage(one(address), { relay, ledger: counting }, options)).code, 250);
    }
    assert.deepEqual(calls, ['delivered', 'delivered'], 'read, never written, for a keyed or a keyless single recipient');
    calls.length = 0;
    await processMessage(input(postfixMessage('4QXyZ1abc')), { relay, ledger: counting }, options);
    assert.deepEqual(calls.sort(), ['delivered', 'record', 'record', 'record'], 'three recipients: one read, a write per copy');
  });

  for (const backend of backends) {
    it(`${backend.name}: a retry left with one recipient whose copy an earlier attempt recorded sends nothing`, () =>
      withDatabase(backend, async (db) => {
        // Attempt 1 to alice and bob: bob's copy fails, alice's is recorded. Attempt 2 (say bob's RCPT was refused
        // meanwhile) carries alice alone: her copy must not go out again.
        const options: FilterOptions = { maxHeaderSize: 64 * 1024, groupRecipients: false, spoolMemory: 1024 * 1024 };
        const ledger = new DeliveredCopies(db);
        const relay = new FlakyRelay(new Set(['bob@example.test']));
        const raw = postfixMessage('4QXyZ1abc');
        const pair = { ...input(raw), recipients: recipients.filter((r) => r.address !== 'carol@example.test') };
        assert.equal(messageReply(await processMessage(pair, { relay, ledger }, options)).code, 451);
        relay.sent.length = 0;
        const alone = { ...input(raw), recipients: recipients.filter((r) => r.address === 'alice@example.test') };
        const retry = await processMessage(alone, { relay, ledger }, options);
        assert.equal(messageReply(retry).code, 250);
        assert.equal(retry.plan.actions.get('alice@example.test'), 'already-delivered');
        assert.deepEqual(relay.sent, []);
      }));
  }

  it('a ledger that cannot be read or written never stops a message: nothing skipped, the failures reported', async () => {
    const options: FilterOptions = { maxHeaderSize: 64 * 1024, groupRecipients: false, spoolMemory: 1024 * 1024 };
    const broken: DeliveryLedger = {
      delivered: () => Promise.reject(new Error('database down')),
      record: () => Promise.reject(new Error('database down')),
    };
    const relay = new FlakyRelay();
    const result = await processMessage(input(postfixMessage('4QXyZ1abc')), { relay, ledger: broken }, options);
    assert.equal(messageReply(result).code, 250);
    assert.equal(relay.sent.flat().length, 3);
    assert.equal(result.ledgerErrors.length, 1 + result.results.length, 'the read and each copy’s write');
  });
});
