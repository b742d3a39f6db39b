/**
 * Who gets what (src/filter/plan.ts): recipients into copies by key, style and box, with real OpenPGP keys.
 * Policies that refuse a recipient (on_unusable_key = tempfail/reject, incoming_box.no_key) act at RCPT time in
 * filter.ts; what reaches the plan is what those policies let through.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as openpgp from 'openpgp';
import { planDelivery, type Plan, type PlanInput, type RoutedRecipient } from '../../src/filter/plan.js';

const BASE: Omit<PlanInput, 'recipients'> = { alreadyEncrypted: undefined, inlineEligible: true, groupRecipients: false, boxScheme: 'openpgp' };

const plan = (recipients: RoutedRecipient[], options: Partial<PlanInput> = {}) => planDelivery({ ...BASE, ...options, recipients });

/** Copies as kind, recipients, fingerprints of their keys and box user: easy to compare whole. */
function copiesOf(result: Plan) {
  return result.copies.map((copy) => ({
    kind: copy.kind,
    recipients: copy.recipients,
    keys: copy.keys.map((key) => key.getFingerprint()),
    ...(copy.boxUser === undefined ? {} : { boxUser: copy.boxUser }),
  }));
}

describe('planDelivery', () => {
  let aliceKey: openpgp.PublicKey;
  let bobKey: openpgp.PublicKey;
  let bobSecondKey: openpgp.PublicKey;
  let dave: openpgp.PublicKey;
  const fp = (key: openpgp.PublicKey) => key.getFingerprint();

  const keyed = (address: string, keys: openpgp.PublicKey[], style: 'mime' | 'inline' = 'mime', boxUser?: string): RoutedRecipient => ({
    address,
    lookup: { kind: 'usable', address, style, keys },
    ...(boxUser === undefined ? {} : { boxUser }),
  });
  const keyless = (address: string): RoutedRecipient => ({ address, lookup: { kind: 'none', address } });
  const unusable = (address: string): RoutedRecipient => ({ address, lookup: { kind: 'unusable', address, reason: 'expired' } });

  before(async () => {
    const make = async (email: string) => (await openpgp.readKey({ armoredKey: (await openpgp.generateKey({ userIDs: [{ email }], format: 'armored' })).publicKey })) as openpgp.PublicKey;
    [aliceKey, bobKey, bobSecondKey, dave] = await Promise.all([make('alice@example.test'), make('bob@example.test'), make('bob@example.test'), make('dave@example.test')]);
  });

  it('plans nothing for no recipients', () => {
    assert.deepEqual(plan([]), { copies: [], actions: new Map() });
  });

  it('puts keyless and unusable-key recipients into one plain copy, first, and says why for each', () => {
    const result = plan([keyed('alice@example.test', [aliceKey]), keyless('carol@example.test'), unusable('erin@example.test')]);
    assert.deepEqual(copiesOf(result), [
      { kind: 'plain', recipients: ['carol@example.test', 'erin@example.test'], keys: [] },
      { kind: 'mime', recipients: ['alice@example.test'], keys: [fp(aliceKey)] },
    ]);
    assert.deepEqual(
      result.actions,
      new Map([
        ['alice@example.test', 'encrypted-mime'],
        ['carol@example.test', 'plain-no-key'],
        ['erin@example.test', 'plain-unusable-key'],
      ]),
    );
  });

  it('gives each keyed recipient a copy of their own, with all of their keys and nobody else’s', () => {
    const result = plan([keyed('alice@example.test', [aliceKey]), keyed('bob@example.test', [bobKey, bobSecondKey])]);
    assert.deepEqual(copiesOf(result), [
      { kind: 'mime', recipients: ['alice@example.test'], keys: [fp(aliceKey)] },
      { kind: 'mime', recipients: ['bob@example.test'], keys: [fp(bobKey), fp(bobSecondKey)] },
    ]);
  });

  it('encrypts inline for the inline style when the message suits it, else as PGP/MIME', () => {
    const recipients = [keyed('alice@example.test', [aliceKey], 'inline'), keyed('bob@example.test', [bobKey])];
    const suits = plan(recipients, { inlineEligible: true });
    assert.deepEqual(copiesOf(suits).map((c) => c.kind), ['inline', 'mime']);
    assert.equal(suits.actions.get('alice@example.test'), 'encrypted-inline');
    const doesNot = plan(recipients, { inlineEligible: false });
    assert.deepEqual(copiesOf(doesNot).map((c) => c.kind), ['mime', 'mime']);
    assert.equal(doesNot.actions.get('alice@example.test'), 'encrypted-mime');
  });

  it('groups keyed recipients into one copy per style when asked, leaving their own key lists alone', () => {
    const recipients = [
      keyed('alice@example.test', [aliceKey]),
      keyed('dave@example.test', [dave], 'inline'),
      keyless('carol@example.test'),
      keyed('bob@example.test', [bobKey, bobSecondKey]),
    ];
    const result = plan(recipients, { groupRecipients: true });
    assert.deepEqual(copiesOf(result), [
      { kind: 'plain', recipients: ['carol@example.test'], keys: [] },
      { kind: 'mime', recipients: ['alice@example.test', 'bob@example.test'], keys: [fp(aliceKey), fp(bobKey), fp(bobSecondKey)] },
      { kind: 'inline', recipients: ['dave@example.test'], keys: [fp(dave)] },
    ]);
    const aliceLookup = recipients[0]!.lookup;
    assert.ok(aliceLookup.kind === 'usable');
    assert.deepEqual(aliceLookup.keys.map(fp), [fp(aliceKey)], 'the key directory’s list is not the group’s');
  });

  it('groups inline-style recipients with PGP/MIME ones when the message does not suit inline', () => {
    const result = plan([keyed('alice@example.test', [aliceKey]), keyed('dave@example.test', [dave], 'inline')], { groupRecipients: true, inlineEligible: false });
    assert.deepEqual(copiesOf(result), [{ kind: 'mime', recipients: ['alice@example.test', 'dave@example.test'], keys: [fp(aliceKey), fp(dave)] }]);
  });

  it('passes an already encrypted message to every relay recipient in the plain copy, keyed or not', () => {
    const result = plan([keyed('alice@example.test', [aliceKey]), keyless('carol@example.test'), unusable('erin@example.test')], { alreadyEncrypted: 'PGP/MIME', groupRecipients: true });
    assert.deepEqual(copiesOf(result), [{ kind: 'plain', recipients: ['alice@example.test', 'carol@example.test', 'erin@example.test'], keys: [] }]);
    for (const address of ['alice@example.test', 'carol@example.test', 'erin@example.test']) assert.equal(result.actions.get(address), 'already-encrypted', address);
  });

  describe('Incoming Box recipients', () => {
    it('get the whole message encrypted (openpgp) or PGP/MIME (openpgp-mime), to their own keys', () => {
      const whole = plan([keyed('alice@example.test', [aliceKey], 'mime', 'alice')], { boxScheme: 'openpgp' });
      assert.deepEqual(copiesOf(whole), [{ kind: 'whole', recipients: ['alice@example.test'], keys: [fp(aliceKey)], boxUser: 'alice' }]);
      assert.equal(whole.actions.get('alice@example.test'), 'incoming-box');
      const mime = plan([keyed('alice@example.test', [aliceKey], 'inline', 'alice')], { boxScheme: 'openpgp-mime' });
      assert.deepEqual(copiesOf(mime), [{ kind: 'mime', recipients: ['alice@example.test'], keys: [fp(aliceKey)], boxUser: 'alice' }], 'the inline style does not apply to a box');
      assert.equal(mime.actions.get('alice@example.test'), 'incoming-box');
    });

    it('each get a copy of their own, never grouped, not even with relay recipients of the same kind', () => {
      const result = plan(
        [
          keyed('alice@example.test', [aliceKey], 'mime', 'alice'),
          keyed('bob@example.test', [bobKey]),
          keyed('dave@example.test', [dave], 'mime', 'dave'),
          keyed('bob2@example.test', [bobSecondKey]),
        ],
        { groupRecipients: true, boxScheme: 'openpgp-mime' },
      );
      assert.deepEqual(copiesOf(result), [
        { kind: 'mime', recipients: ['alice@example.test'], keys: [fp(aliceKey)], boxUser: 'alice' },
        { kind: 'mime', recipients: ['bob@example.test', 'bob2@example.test'], keys: [fp(bobKey), fp(bobSecondKey)] },
        { kind: 'mime', recipients: ['dave@example.test'], keys: [fp(dave)], boxUser: 'dave' },
      ]);
    });

    it('get the raw bytes of an already encrypted message, in their own box', () => {
      const result = plan([keyed('alice@example.test', [aliceKey], 'mime', 'alice'), keyed('bob@example.test', [bobKey])], { alreadyEncrypted: 'inline PGP' });
      assert.deepEqual(copiesOf(result), [
        { kind: 'plain', recipients: ['bob@example.test'], keys: [] },
        { kind: 'raw', recipients: ['alice@example.test'], keys: [], boxUser: 'alice' },
      ]);
      assert.equal(result.actions.get('alice@example.test'), 'already-encrypted');
    });
  });

  it('places every recipient in exactly one copy and gives each an action', () => {
    const recipients = [
      keyed('a@example.test', [aliceKey], 'inline'),
      keyless('b@example.test'),
      keyed('c@example.test', [bobKey], 'mime', 'c'),
      unusable('d@example.test'),
      keyed('e@example.test', [dave]),
      keyed('f@example.test', [bobSecondKey], 'inline'),
    ];
    for (const groupRecipients of [false, true]) {
      for (const alreadyEncrypted of [undefined, 'PGP/MIME']) {
        const result = plan(recipients, { groupRecipients, alreadyEncrypted });
        const placed = result.copies.flatMap((copy) => copy.recipients).sort();
        assert.deepEqual(placed, recipients.map((r) => r.address).sort());
        assert.deepEqual([...result.actions.keys()].sort(), placed);
        assert.ok(result.copies.every((copy) => copy.recipients.length > 0));
      }
    }
  });
});
