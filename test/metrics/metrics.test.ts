import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import {
  BoxDeliveryError,
  DatabaseUnavailableError,
  LacreError,
  MessageRejectedError,
  MessageTooLargeError,
  NoBoxError,
  RecipientPolicyError,
  RelayError,
} from '../../src/errors.js';
import { errorKind } from '../../src/filter/reply.js';
import { LacreMetrics, messageOutcome, sizeClass } from '../../src/metrics/metrics.js';
import { meteredRelay } from '../../src/delivery/metered.js';
import { Relay } from '../../src/delivery/reinject.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

/** Sample lines of the exposition text, keyed by `name{labels}` as printed. */
async function samples(metrics: LacreMetrics): Promise<Map<string, number>> {
  const map = new Map<string, number>();
  for (const line of (await metrics.scrape()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    map.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return map;
}

const ACCEPTED = { code: 250, enhanced: '2.0.0', text: 'message accepted' };

describe('error kinds', () => {
  it('maps every typed error to its kind, and anything else to other', () => {
    assert.equal(errorKind(new RelayError('relay: refused', false)), 'relay');
    assert.equal(errorKind(new DatabaseUnavailableError('down')), 'database');
    assert.equal(errorKind(new BoxDeliveryError('507', 507)), 'box');
    assert.equal(errorKind(new MessageRejectedError('header too large', '5.3.4')), 'parse');
    assert.equal(errorKind(new MessageTooLargeError('too large')), 'parse');
    assert.equal(errorKind(new RecipientPolicyError('key not usable', false, 'a@example.test')), 'key');
    assert.equal(errorKind(new NoBoxError('a@example.test')), 'box');
    assert.equal(errorKind(new LacreError('unexpected')), 'other');
    assert.equal(errorKind(new TypeError('bug')), 'other');
  });
});

describe('labels', () => {
  it('size classes have inclusive upper bounds', () => {
    assert.equal(sizeClass(0), 'le_16KiB');
    assert.equal(sizeClass(16 * 1024), 'le_16KiB');
    assert.equal(sizeClass(16 * 1024 + 1), 'le_256KiB');
    assert.equal(sizeClass(4 * 1024 * 1024), 'le_4MiB');
    assert.equal(sizeClass(64 * 1024 * 1024 + 1), 'gt_64MiB');
  });

  it('outcomes follow the reply class', () => {
    assert.equal(messageOutcome(250), 'accepted');
    assert.equal(messageOutcome(451), 'tempfailed');
    assert.equal(messageOutcome(554), 'rejected');
  });
});

describe('LacreMetrics', () => {
  it('starts every labelled counter at zero, so that dashboards see the series before the first event', async () => {
    const values = await samples(new LacreMetrics());
    assert.equal(values.get('lacre_messages_total{outcome="tempfailed"}'), 0);
    assert.equal(values.get('lacre_recipients_total{action="incoming-box"}'), 0);
    assert.equal(values.get('lacre_errors_total{kind="box"}'), 0);
    assert.equal(values.get('lacre_encrypted_message_duration_seconds_count{size_class="gt_64MiB"}'), 0);
  });

  it('counts outcomes, actions, errors and durations from message reports', async () => {
    const metrics = new LacreMetrics();
    metrics.messageStarted();
    metrics.messageStarted();
    assert.equal((await samples(metrics)).get('lacre_messages_in_flight'), 2);
    metrics.messageFinished({ reply: ACCEPTED, actions: ['encrypted-mime', 'plain-no-key'], errors: [], durationSeconds: 0.02, size: 300_000, encrypted: true });
    const relayDown = new RelayError('relay: connect ECONNREFUSED', false);
    metrics.messageFinished({ reply: { code: 451, enhanced: '4.4.1', text: 'later' }, actions: [], errors: [relayDown], durationSeconds: 3, size: 1000, encrypted: true });
    metrics.bytesReceived(301_000);
    metrics.recipientRefused(new DatabaseUnavailableError('down'), false);
    metrics.recipientRefused(new RecipientPolicyError('key revoked', true, 'x@example.test'), true);
    const values = await samples(metrics);
    assert.equal(values.get('lacre_messages_in_flight'), 0);
    assert.equal(values.get('lacre_messages_total{outcome="accepted"}'), 1);
    assert.equal(values.get('lacre_messages_total{outcome="tempfailed"}'), 1);
    assert.equal(values.get('lacre_recipients_total{action="encrypted-mime"}'), 1);
    assert.equal(values.get('lacre_recipients_total{action="plain-no-key"}'), 1);
    assert.equal(values.get('lacre_errors_total{kind="relay"}'), 1);
    assert.equal(values.get('lacre_errors_total{kind="database"}'), 1);
    assert.equal(values.get('lacre_errors_total{kind="key"}'), 1);
    assert.equal(values.get('lacre_recipients_refused_total{reply="tempfail"}'), 1);
    assert.equal(values.get('lacre_recipients_refused_total{reply="reject"}'), 1);
    assert.equal(values.get('lacre_received_bytes_total'), 301_000);
    assert.equal(values.get('lacre_message_duration_seconds_count'), 2);
    assert.equal(values.get('lacre_message_duration_seconds_bucket{le="0.025"}'), 1);
    // Only the accepted encrypted message is timed by size class.
    assert.equal(values.get('lacre_encrypted_message_duration_seconds_count{size_class="le_4MiB"}'), 1);
    assert.equal(values.get('lacre_encrypted_message_duration_seconds_count{size_class="le_16KiB"}'), 0);
  });

  it('reads scrape-time sources: sessions, key cache, relay pool, readiness, key counts', async () => {
    const metrics = new LacreMetrics();
    let sessions = 3;
    metrics.watchSessions(() => sessions);
    metrics.watchKeyCache(() => ({ size: 5, hits: 30, misses: 10, invalidations: 2 }));
    metrics.watchRelayPool(() => ({ idle: false, pending: 7, maxConnections: 20 }));
    metrics.watchReadiness(async () => ({ ready: false, checks: [{ name: 'database', ok: true }, { name: 'relay', ok: false }] }));
    metrics.watchKeyCounts(async () => ({ confirmed: 12, expiringSoon: 4, expired: 1 }));
    let values = await samples(metrics);
    assert.equal(values.get('lacre_smtp_sessions'), 3);
    assert.equal(values.get('lacre_key_cache_entries'), 5);
    assert.equal(values.get('lacre_key_cache_hits_total'), 30);
    assert.equal(values.get('lacre_key_cache_misses_total'), 10);
    assert.equal(values.get('lacre_key_cache_invalidations_total'), 2);
    assert.equal(values.get('lacre_key_cache_hit_ratio'), 0.75);
    assert.equal(values.get('lacre_relay_pool_idle'), 0);
    assert.equal(values.get('lacre_relay_pool_pending_messages'), 7);
    assert.equal(values.get('lacre_ready'), 0);
    assert.equal(values.get('lacre_ready_check_up{check="relay"}'), 0);
    assert.equal(values.get('lacre_ready_check_up{check="database"}'), 1);
    assert.equal(values.get('lacre_keys_expiring_soon'), 4);
    sessions = 0;
    values = await samples(metrics);
    assert.equal(values.get('lacre_smtp_sessions'), 0);
    assert.equal(values.get('lacre_key_cache_hits_total'), 30, 'a second scrape does not add the total again');
  });

  it('includes the Node process metrics, in its own registry', async () => {
    const first = await new LacreMetrics().scrape();
    const second = await new LacreMetrics().scrape();
    assert.match(first, /^process_resident_memory_bytes \d+/m);
    assert.match(second, /^nodejs_eventloop_lag_seconds /m);
  });
});

describe('metered relay (real SMTP sink)', () => {
  it('counts the bytes of accepted copies only, and sends in flight', async () => {
    const sink = await SmtpSink.start();
    const config = loadConfig({ env: { LACRE_RELAY_PORT: String(sink.port) } });
    const relay = new Relay(config.relay, undefined, createLogger('silent'));
    const metrics = new LacreMetrics();
    const downstream = meteredRelay(relay, metrics);
    const message = Buffer.from('From: a@example.net\r\nSubject: x\r\n\r\nbody line\r\n');
    try {
      const sending = downstream.send({ from: 'a@example.net', to: ['b@example.test'], use8BitMime: false }, Readable.from([message]));
      assert.equal((await samples(metrics)).get('lacre_downstream_sends_in_flight{downstream="relay"}'), 1);
      assert.equal(relay.poolState().pending, 1, 'the real pool counts the message in flight');
      assert.equal((await sending).size, 0);
      assert.deepEqual(relay.poolState(), { idle: true, pending: 0, maxConnections: 20 });
      assert.deepEqual(sink.messages[0]?.data, message);
      let values = await samples(metrics);
      assert.equal(values.get('lacre_delivered_bytes_total{downstream="relay"}'), message.length);
      assert.equal(values.get('lacre_downstream_sends_in_flight{downstream="relay"}'), 0);

      await sink.stop();
      await assert.rejects(downstream.send({ from: 'a@example.net', to: ['b@example.test'], use8BitMime: false }, Readable.from([message])), RelayError);
      values = await samples(metrics);
      assert.equal(values.get('lacre_delivered_bytes_total{downstream="relay"}'), message.length, 'a refused copy adds nothing');
      assert.equal(values.get('lacre_downstream_sends_in_flight{downstream="relay"}'), 0);
    } finally {
      relay.close();
      await sink.stop();
    }
  });
});
