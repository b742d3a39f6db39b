import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BoxDeliveryError,
  DatabaseUnavailableError,
  DataTimeoutError,
  LacreError,
  MessageRejectedError,
  MessageTooLargeError,
  NoBoxError,
  RecipientPolicyError,
  RelayError,
  StreamedCopyError,
} from '../../src/errors.js';
import {
  abortedRecipientReplies,
  ACCEPTED,
  ERROR_KINDS,
  errorKind,
  errorReply,
  exitCodeFor,
  failureOutcome,
  messageReply,
  recipientReplies,
  type FailureOutcome,
} from '../../src/filter/reply.js';
import type { CopyResult, MessageResult } from '../../src/filter/pipeline.js';
import type { Copy } from '../../src/filter/plan.js';

const reply = (code: number, enhanced: string, text: string) => ({ code, enhanced, text });

/** Every outcome class (src/errors.ts) with the reply and the metrics kind it must get. */
const OUTCOMES: Array<[string, unknown, FailureOutcome]> = [
  ['key store down', new DatabaseUnavailableError('down'), { reply: reply(451, '4.3.0', 'key store unavailable, try again later'), kind: 'database' }],
  ['DATA too slow', new DataTimeoutError('slow'), { reply: reply(421, '4.4.2', 'Error: timeout exceeded'), kind: 'other' }],
  ['message too large', new MessageTooLargeError('big'), { reply: reply(552, '5.3.4', 'message too large'), kind: 'parse' }],
  ['message refused as received', new MessageRejectedError('header block too large', '5.3.4'), { reply: reply(554, '5.3.4', 'header block too large'), kind: 'parse' }],
  ['another enhanced code', new MessageRejectedError('bad bytes', '5.6.0'), { reply: reply(554, '5.6.0', 'bad bytes'), kind: 'parse' }],
  ['no box for the address', new NoBoxError('x@box.example'), { reply: reply(550, '5.1.1', 'no Incoming Box for this recipient'), kind: 'box' }],
  ['unusable key, reject', new RecipientPolicyError('key revoked', true, 'a@example.test'), { reply: reply(550, '5.7.1', 'key revoked'), kind: 'key' }],
  ['unusable key, tempfail', new RecipientPolicyError('key expired', false, 'a@example.test'), { reply: reply(450, '4.7.1', 'key expired'), kind: 'key' }],
  ['box full', new BoxDeliveryError('x', 507), { reply: reply(452, '4.2.2', 'mailbox full (Incoming Box quota exceeded), try again later'), kind: 'box' }],
  ['box user unknown', new BoxDeliveryError('x', 404), { reply: reply(550, '5.1.1', 'no such Incoming Box user'), kind: 'box' }],
  ['box credentials (401)', new BoxDeliveryError('x', 401), { reply: reply(451, '4.7.0', 'Incoming Box refused our credentials, try again later'), kind: 'box' }],
  ['box credentials (403)', new BoxDeliveryError('x', 403), { reply: reply(451, '4.7.0', 'Incoming Box refused our credentials, try again later'), kind: 'box' }],
  ['box bad request', new BoxDeliveryError('no\nid', 400), { reply: reply(451, '4.3.0', 'Incoming Box refused the request, try again later: no id'), kind: 'box' }],
  ['box error', new BoxDeliveryError('oops', 500), { reply: reply(451, '4.4.1', 'Incoming Box delivery failed, try again later: oops'), kind: 'box' }],
  ['box unreachable', new BoxDeliveryError('timed out'), { reply: reply(451, '4.4.1', 'Incoming Box delivery failed, try again later: timed out'), kind: 'box' }],
  ['relay refused', new RelayError('relay: 554  5.7.1\r\n  no', true, 554), { reply: reply(554, '5.3.0', 'reinjection refused: relay: 554 5.7.1 no'), kind: 'relay' }],
  ['relay down', new RelayError('relay: ECONNREFUSED', false), { reply: reply(451, '4.4.1', 'reinjection failed, try again later: relay: ECONNREFUSED'), kind: 'relay' }],
  ['unexpected LacreError', new LacreError('unexpected'), { reply: reply(451, '4.3.0', 'temporary failure processing the message, try again later'), kind: 'other' }],
  ['a bug', new TypeError('x is undefined'), { reply: reply(451, '4.3.0', 'temporary failure processing the message, try again later'), kind: 'other' }],
  ['not even an Error', 'a string', { reply: reply(451, '4.3.0', 'temporary failure processing the message, try again later'), kind: 'other' }],
];

const copy = (kind: Copy['kind'], ...recipients: string[]): Copy => ({ kind, recipients, keys: [] });

function resultOf(...results: CopyResult[]): MessageResult {
  const actions = new Map(results.flatMap((r) => r.copy.recipients.map((rcpt) => [rcpt, 'plain-no-key'] as const)));
  return { plan: { copies: results.map((r) => r.copy), actions }, results, messageId: undefined, queueId: undefined, alreadyEncrypted: undefined, ledgerErrors: [] };
}

const relayDown = new RelayError('relay: ECONNREFUSED', false);
const relayRefused = new RelayError('relay: 554 no', true, 554);
const userUnknown = new RelayError('relay: 550 5.1.1 unknown', true, 550);

describe('an outcome, by its class', () => {
  for (const [name, error, expected] of OUTCOMES) {
    it(`${name}: ${expected.reply.code} ${expected.reply.enhanced}, counted as ${expected.kind}`, () => {
      assert.deepEqual(failureOutcome(error), expected);
      assert.deepEqual(errorReply(error), expected.reply);
      assert.equal(errorKind(error), expected.kind);
      assert.ok(ERROR_KINDS.includes(errorKind(error)));
    });
  }

  it('every metrics kind is the outcome of some class', () => {
    assert.deepEqual(new Set(OUTCOMES.map(([, , expected]) => expected.kind)), new Set(ERROR_KINDS));
  });

  it('a failed streamed copy gets the reply and the kind of its own failure', () => {
    for (const [name, cause, expected] of OUTCOMES) {
      const error = new StreamedCopyError(['a@example.test'], cause);
      assert.deepEqual(failureOutcome(error), expected, name);
      assert.equal(error.cause, cause, 'the original error is kept');
    }
  });

  it('"no box" is told apart from the other policy refusals by class, not by its code', () => {
    assert.equal(errorKind(new NoBoxError('x@box.example')), 'box');
    assert.equal(errorKind(new RecipientPolicyError('no Incoming Box for this recipient', true, 'x@box.example')), 'key');
  });

  it('exit codes for lacre pipe', () => {
    assert.equal(exitCodeFor(ACCEPTED), 0);
    assert.equal(exitCodeFor(errorReply(relayDown)), 75);
    assert.equal(exitCodeFor(errorReply(new MessageTooLargeError('big'))), 65);
    assert.equal(exitCodeFor(errorReply(new MessageRejectedError('bad bytes', '5.6.0'))), 65);
    assert.equal(exitCodeFor(errorReply(relayRefused)), 69);
  });
});

describe('one reply for the message (SMTP, pipe)', () => {
  it('250 when every copy was accepted', () => {
    assert.deepEqual(messageReply(resultOf({ copy: copy('plain', 'a@x') }, { copy: copy('mime', 'b@x') })), ACCEPTED);
  });

  it('a temporary failure wins over a permanent one, whichever comes first', () => {
    const permanentFirst = resultOf({ copy: copy('plain', 'a@x'), error: relayRefused }, { copy: copy('mime', 'b@x'), error: relayDown });
    assert.deepEqual(messageReply(permanentFirst), errorReply(relayDown));
    const temporaryFirst = resultOf({ copy: copy('plain', 'a@x'), error: relayDown }, { copy: copy('mime', 'b@x'), error: relayRefused });
    assert.deepEqual(messageReply(temporaryFirst), errorReply(relayDown));
  });

  it('permanent failures alone: the first one', () => {
    const box = new BoxDeliveryError('full', 507);
    const result = resultOf({ copy: copy('plain', 'a@x') }, { copy: copy('whole', 'b@x'), error: box }, { copy: copy('mime', 'c@x'), error: relayRefused });
    assert.deepEqual(messageReply(result), errorReply(box));
  });

  it('a recipient refused within an accepted copy fails the message', () => {
    const result = resultOf({ copy: copy('plain', 'a@x', 'b@x'), rejected: new Map([['b@x', userUnknown]]) });
    assert.deepEqual(messageReply(result), reply(554, '5.3.0', 'reinjection refused: relay: 550 5.1.1 unknown'));
  });
});

describe('one reply per recipient (LMTP)', () => {
  it('each recipient gets its own copy’s outcome, in envelope order, duplicates included', () => {
    const box = new BoxDeliveryError('full', 507);
    const result = resultOf(
      { copy: copy('plain', 'a@x', 'b@x'), rejected: new Map([['b@x', userUnknown]]) },
      { copy: copy('mime', 'c@x'), error: relayDown },
      { copy: copy('whole', 'd@x'), error: box },
      { copy: copy('mime', 'e@x') },
    );
    const replies = recipientReplies(['e@x', 'd@x', 'c@x', 'b@x', 'a@x', 'e@x'], result);
    assert.deepEqual(replies, [ACCEPTED, errorReply(box), errorReply(relayDown), errorReply(userUnknown), ACCEPTED, ACCEPTED]);
  });
});

describe('a message that failed as a whole', () => {
  const recipients = ['a@x', 'b@x', 'c@x'];
  const anotherCopyFailed = reply(451, '4.3.0', 'another copy of this message failed, nothing was delivered: try again later');

  it('any other failure: every recipient gets its reply (LMTP), the message one (SMTP)', () => {
    const tooLarge = new MessageTooLargeError('big');
    assert.deepEqual(abortedRecipientReplies(recipients, tooLarge), recipients.map(() => errorReply(tooLarge)));
    assert.deepEqual(abortedRecipientReplies(recipients, relayRefused), recipients.map(() => errorReply(relayRefused)));
  });

  it("a streamed copy's failure answers that copy's recipients; the others are deferred, not bounced", () => {
    const failure = new StreamedCopyError(['c@x', 'a@x'], relayRefused);
    assert.deepEqual(abortedRecipientReplies(recipients, failure), [errorReply(relayRefused), anotherCopyFailed, errorReply(relayRefused)]);
    assert.deepEqual(errorReply(failure), reply(554, '5.3.0', 'reinjection refused: relay: 554 no'), 'SMTP: the copy’s reply');
    const temporary = new StreamedCopyError(['b@x'], relayDown);
    assert.deepEqual(abortedRecipientReplies(recipients, temporary), [anotherCopyFailed, errorReply(relayDown), anotherCopyFailed]);
  });
});
