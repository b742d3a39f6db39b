/**
 * Lacre's Prometheus metrics: one prom-client Registry per process (never the global one), with Node's
 * default process metrics. Labels are fixed, small sets; never an address, a queue id or a key.
 * Values that live elsewhere (open sessions, key cache, relay pool, readiness, key expiry) are read when
 * scraped, from sources attached with the watch* methods.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FilterObserver, MessageReport } from '../filter/filter.js';
import type { RecipientAction } from '../filter/plan.js';
import type { KeyDirectoryStats } from '../keys/directory.js';
import { ERROR_KINDS, errorKind } from '../filter/reply.js';

export const MESSAGE_OUTCOMES = ['accepted', 'tempfailed', 'rejected'] as const;
export type MessageOutcome = (typeof MESSAGE_OUTCOMES)[number];

export const RECIPIENT_ACTIONS: readonly RecipientAction[] = [
  'encrypted-mime',
  'encrypted-inline',
  'plain-no-key',
  'plain-unusable-key',
  'already-encrypted',
  'incoming-box',
  'already-delivered',
];

export const DOWNSTREAMS = ['relay', 'box'] as const;
export type DownstreamName = (typeof DOWNSTREAMS)[number];

const KiB = 1024;
const MiB = 1024 * KiB;
/** Upper bounds of the size_class label; a message larger than the last is "gt_64MiB". */
const SIZE_CLASSES: ReadonlyArray<readonly [number, string]> = [
  [16 * KiB, 'le_16KiB'],
  [256 * KiB, 'le_256KiB'],
  [4 * MiB, 'le_4MiB'],
  [64 * MiB, 'le_64MiB'],
];
export const SIZE_CLASS_LABELS = [...SIZE_CLASSES.map(([, label]) => label), 'gt_64MiB'];

export function sizeClass(bytes: number): string {
  return SIZE_CLASSES.find(([limit]) => bytes <= limit)?.[1] ?? 'gt_64MiB';
}

export function messageOutcome(replyCode: number): MessageOutcome {
  if (replyCode < 400) return 'accepted';
  return replyCode < 500 ? 'tempfailed' : 'rejected';
}

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface RelayPoolState {
  /** nodemailer's isIdle(): the pool can take another message without queueing it. */
  idle: boolean;
  /** nodemailer's pendingCount(): messages queued or being sent. */
  pending: number;
  /** relay.max_connections, or fewer while the relay was seen to serve fewer at once. */
  maxConnections: number;
}

export interface ReadinessSnapshot {
  ready: boolean;
  checks: ReadonlyArray<{ name: string; ok: boolean }>;
}

export interface KeyCounts {
  confirmed: number;
  expiringSoon: number;
  expired: number;
}

/** A gauge of scrapedGauges: its name, help, and how it reads its value from the source's snapshot. */
type ScrapedGauge<T> = readonly [name: string, help: string, read: (snapshot: T) => number | undefined];

/** Where scrape-time values come from; each is attached once the part it reads exists. */
interface Sources {
  sessions?: () => number;
  keyCache?: () => KeyDirectoryStats;
  relayPool?: () => RelayPoolState;
  readiness?: () => Promise<ReadinessSnapshot>;
  keyCounts?: () => Promise<KeyCounts | undefined>;
}

export class LacreMetrics implements FilterObserver {
  readonly registry = new Registry();
  private readonly sources: Sources = {};

  private readonly messages = this.counter(
    'lacre_messages_total',
    'Messages processed (DATA), by the reply of the whole transaction: accepted (2xx), tempfailed (4xx), rejected (5xx)',
    ['outcome'],
  );
  private readonly recipients = this.counter('lacre_recipients_total', 'Recipients whose copy was accepted downstream, by what Lacre did for them', ['action']);
  private readonly refused = this.counter(
    'lacre_recipients_refused_total',
    'Recipients refused at RCPT time (key store down, or key policy): tempfail (4xx) or reject (5xx)',
    ['reply'],
  );
  private readonly errors = this.counter('lacre_errors_total', 'Failures that made Lacre answer 4xx/5xx, by kind (relay, database, key, parse, box, other)', ['kind']);
  private readonly bytesIn = this.counter('lacre_received_bytes_total', 'Message bytes received in DATA');
  private readonly bytesOut = this.counter('lacre_delivered_bytes_total', 'Bytes of copies accepted downstream (relay: reinjection; box: Incoming Box)', ['downstream']);
  private readonly sends = this.gauge('lacre_downstream_sends_in_flight', 'Copies being handed to a downstream now', ['downstream']);
  private readonly duration = this.durationHistogram(
    'lacre_message_duration_seconds',
    'Whole-message processing time, from the start of DATA to the reply (every outcome)',
  );
  private readonly encryptedDuration = this.durationHistogram(
    'lacre_encrypted_message_duration_seconds',
    'Processing time of accepted messages with at least one encrypted copy, by message size class (encryption and delivery together)',
    ['size_class'],
  );
  private readonly inFlight = this.gauge('lacre_messages_in_flight', 'Messages between the start of DATA and their reply');

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    for (const outcome of MESSAGE_OUTCOMES) this.messages.inc({ outcome }, 0);
    for (const action of RECIPIENT_ACTIONS) this.recipients.inc({ action }, 0);
    for (const reply of ['tempfail', 'reject']) this.refused.inc({ reply }, 0);
    for (const kind of ERROR_KINDS) this.errors.inc({ kind }, 0);
    for (const downstream of DOWNSTREAMS) {
      this.bytesOut.inc({ downstream }, 0);
      this.sends.set({ downstream }, 0);
    }
    for (const size_class of SIZE_CLASS_LABELS) this.encryptedDuration.zero({ size_class });
    this.registerScrapeTimeMetrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text for GET /metrics. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  // ---- FilterObserver ----

  messageStarted(): void {
    this.inFlight.inc();
  }

  messageFinished(report: MessageReport): void {
    this.inFlight.dec();
    const outcome = messageOutcome(report.reply.code);
    this.messages.inc({ outcome });
    for (const action of report.actions) this.recipients.inc({ action });
    for (const error of report.errors) this.errors.inc({ kind: errorKind(error) });
    this.duration.observe(report.durationSeconds);
    if (outcome === 'accepted' && report.encrypted && report.size !== undefined) {
      this.encryptedDuration.observe({ size_class: sizeClass(report.size) }, report.durationSeconds);
    }
  }

  bytesReceived(bytes: number): void {
    this.bytesIn.inc(bytes);
  }

  recipientRefused(error: unknown, permanent: boolean): void {
    this.refused.inc({ reply: permanent ? 'reject' : 'tempfail' });
    this.errors.inc({ kind: errorKind(error) });
  }

  // ---- downstreams (src/delivery/metered.ts) ----

  sendStarted(downstream: DownstreamName): void {
    this.sends.inc({ downstream });
  }

  sendFinished(downstream: DownstreamName, acceptedBytes: number | undefined): void {
    this.sends.dec({ downstream });
    if (acceptedBytes !== undefined) this.bytesOut.inc({ downstream }, acceptedBytes);
  }

  // ---- scrape-time sources ----

  watchSessions(read: () => number): void {
    this.sources.sessions = read;
  }

  watchKeyCache(read: () => KeyDirectoryStats): void {
    this.sources.keyCache = read;
  }

  watchRelayPool(read: () => RelayPoolState): void {
    this.sources.relayPool = read;
  }

  watchReadiness(read: () => Promise<ReadinessSnapshot>): void {
    this.sources.readiness = read;
  }

  watchKeyCounts(read: () => Promise<KeyCounts | undefined>): void {
    this.sources.keyCounts = read;
  }

  private counter<L extends string = string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge<L extends string = string>(name: string, help: string, labelNames: readonly L[] = []): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private durationHistogram<L extends string = string>(name: string, help: string, labelNames: readonly L[] = []): Histogram<L> {
    return new Histogram({ name, help, labelNames, buckets: DURATION_BUCKETS, registers: [this.registry] });
  }

  /**
   * Gauges set when scraped, each from one snapshot that `source` gives (which may cache it); a gauge stays unset
   * while there is no source or snapshot yet, or its `read` has no value.
   */
  private scrapedGauges<T>(source: () => T | undefined | Promise<T | undefined>, gauges: ReadonlyArray<ScrapedGauge<T>>): void {
    for (const [name, help, read] of gauges) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          const snapshot = await source();
          const value = snapshot === undefined ? undefined : read(snapshot);
          if (value !== undefined) this.set(value);
        },
      });
    }
  }

  private registerScrapeTimeMetrics(): void {
    const sources = this.sources;
    this.scrapedGauges(() => sources.sessions?.(), [
      ['lacre_smtp_sessions', 'Open inbound SMTP/LMTP connections (Postfix keeps some open between messages)', (sessions) => sessions],
    ]);
    this.registerKeyCacheMetrics();
    this.scrapedGauges(() => sources.relayPool?.(), [
      ['lacre_relay_pool_idle', "1 when nodemailer's relay pool can take another message without queueing it (its isIdle())", (s) => (s.idle ? 1 : 0)],
      ['lacre_relay_pool_pending_messages', "Messages nodemailer's relay pool has not finished: queued or being sent (its pendingCount())", (s) => s.pending],
      ['lacre_relay_pool_max_connections', 'Connections the relay pool may open: relay.max_connections, or fewer while the relay was seen to serve fewer at once', (s) => s.maxConnections],
    ]);
    this.registerReadinessMetrics();
    // The source caches: the store is read at most every few minutes (src/metrics/key-counts.ts).
    this.scrapedGauges(() => sources.keyCounts?.(), [
      ['lacre_keys_confirmed', 'Distinct confirmed keys in the key store', (counts) => counts.confirmed],
      ['lacre_keys_expiring_soon', 'Distinct confirmed keys that expire within the next 7 days', (counts) => counts.expiringSoon],
      ['lacre_keys_expired', 'Distinct confirmed keys already expired (their recipients get encryption.on_unusable_key)', (counts) => counts.expired],
    ]);
  }

  private registerKeyCacheMetrics(): void {
    const sources = this.sources;
    const stats = () => sources.keyCache?.();
    this.scrapedGauges(stats, [['lacre_key_cache_entries', 'Addresses in the key cache (found and not found alike)', (s) => s.size]]);
    for (const [name, field, help] of [
      ['lacre_key_cache_hits_total', 'hits', 'Key lookups answered from the cache'],
      ['lacre_key_cache_misses_total', 'misses', 'Key lookups that read the key store'],
      ['lacre_key_cache_invalidations_total', 'invalidations', 'Times the whole key cache was dropped (key change notified, notifications reconnected)'],
    ] as const) {
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          const value = stats()?.[field];
          if (value === undefined) return;
          // The directory keeps the running total; a counter can only be set by reset + inc.
          this.reset();
          this.inc(value);
        },
      });
    }
    this.scrapedGauges(stats, [
      [
        'lacre_key_cache_hit_ratio',
        'Hits / (hits + misses) since start; for a recent ratio use rate() of the two counters',
        (s) => (s.hits + s.misses > 0 ? s.hits / (s.hits + s.misses) : undefined),
      ],
    ]);
  }

  private registerReadinessMetrics(): void {
    const sources = this.sources;
    // Both gauges read the same cached run: the monitor behind `readiness` caches and bounds it (src/http/health.ts).
    this.scrapedGauges(() => sources.readiness?.(), [
      ['lacre_ready', '1 when every readiness check passed (the same checks as GET /readyz, cached for a few seconds)', (readiness) => (readiness.ready ? 1 : 0)],
    ]);
    new Gauge({
      name: 'lacre_ready_check_up',
      help: '1 when this readiness check passed: database (SELECT 1), relay (SMTP greeting), box (Incoming Box answers)',
      labelNames: ['check'],
      registers: [this.registry],
      async collect() {
        if (!sources.readiness) return;
        for (const check of (await sources.readiness()).checks) this.set({ check: check.name }, check.ok ? 1 : 0);
      },
    });
  }
}
