import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { loadConfig } from '../../src/config/load.js';
import { RelayError } from '../../src/errors.js';
import { MessageFilter, type MessageReport } from '../../src/filter/filter.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../../src/filter/ports.js';
import type { KeyDirectory } from '../../src/keys/types.js';
import { createLogger } from '../../src/log/logger.js';

const noKeys: KeyDirectory = { lookup: async (address) => ({ kind: 'none', address }), close: async () => undefined };

/** Takes every copy, refusing one recipient of it. */
class RefusingRelay implements Downstream {
  constructor(private readonly refused: string) {}
  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    await text(raw);
    const rejected = new Map<string, RelayError>();
    if (envelope.to.includes(this.refused)) rejected.set(this.refused, new RelayError('relay: 550 5.1.1 unknown', true, 550));
    return rejected;
  }
}

async function filterOnce(perRecipientReplies: boolean): Promise<MessageReport> {
  const reports: MessageReport[] = [];
  const observer = { messageStarted: () => undefined, bytesReceived: () => undefined, recipientRefused: () => undefined, messageFinished: (report: MessageReport) => reports.push(report) };
  // The configuration says SMTP: only the front end's word counts.
  const config = loadConfig({ env: { LACRE_SMTP_LMTP: String(!perRecipientReplies) } });
  const filter = new MessageFilter({ keys: noKeys, downstreams: { relay: new RefusingRelay('b@example.test') }, config, observer });
  const recipients = [await filter.lookupRecipient('a@example.test'), await filter.lookupRecipient('b@example.test')];
  const body = Readable.from([Buffer.from('From: s@example.net\r\n\r\nhello\r\n')]);
  await filter.process({ from: 's@example.net', recipients, body, use8BitMime: false, log: createLogger('silent'), perRecipientReplies });
  assert.equal(reports.length, 1);
  return reports[0]!;
}

describe('the front end says how it answers', () => {
  it('per recipient (LMTP): a recipient whose own reply is 250 counts as delivered', async () => {
    const report = await filterOnce(true);
    assert.equal(report.reply.code, 554);
    assert.deepEqual(report.actions, ['plain-no-key']);
  });

  it('one reply (SMTP, pipe): nobody counts as delivered when the message was not accepted', async () => {
    const report = await filterOnce(false);
    assert.equal(report.reply.code, 554);
    assert.deepEqual(report.actions, []);
  });
});
