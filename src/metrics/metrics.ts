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
import { ERROR_KINDS, errorKind } from './error-kind.js';

export const MESSAGE_OUTCOMES = ['accepted', 'tempfailed', 'rejected'] as const;
export type MessageOutcome = (typeof MESSAGE_OUTCOMES)[number];

export const RECIPIENT_ACTIONS: readonly RecipientAction[] = [
  'encrypted-mime',
  'encrypted-inline',
  'plain-no-key',
  'plain-unusable-key',
  'already-encrypted',
  'incoming-box',
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

  private readonly messages = new Counter({
    name: 'lacre_messages_total',
    help: 'Messages processed (DATA), by the reply of the whole transaction: accepted (2xx), tempfailed (4xx), rejected (5xx)',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  private readonly recipients = new Counter({
    name: 'lacre_recipients_total',
    help: 'Recipients whose copy was accepted downstream, by what Lacre did for them',
    labelNames: ['action'],
    registers: [this.registry],
  });
  private readonly refused = new Counter({
    name: 'lacre_recipients_refused_total',
    help: 'Recipients refused at RCPT time (key store down, or key policy): tempfail (4xx) or reject (5xx)',
    labelNames: ['reply'],
    registers: [this.registry],
  });
  private readonly errors = new Counter({
    name: 'lacre_errors_total',
    help: 'Failures that made Lacre answer 4xx/5xx, by kind (relay, database, key, parse, box, other)',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  private readonly bytesIn = new Counter({
    name: 'lacre_received_bytes_total',
    help: 'Message bytes received in DATA',
    registers: [this.registry],
  });
  private readonly bytesOut = new Counter({
    name: 'lacre_delivered_bytes_total',
    help: 'Bytes of copies accepted downstream (relay: reinjection; box: Incoming Box)',
    labelNames: ['downstream'],
    registers: [this.registry],
  });
  private readonly sends = new Gauge({
    name: 'lacre_downstream_sends_in_flight',
    help: 'Copies being handed to a downstream now',
    labelNames: ['downstream'],
    registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: 'lacre_message_duration_seconds',
    help: 'Whole-message processing time, from the start of DATA to the reply (every outcome)',
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly encryptedDuration = new Histogram({
    name: 'lacre_encrypted_message_duration_seconds',
    help: 'Processing time of accepted messages with at least one encrypted copy, by message size class (encryption and delivery together)',
    labelNames: ['size_class'],
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly inFlight = new Gauge({
    name: 'lacre_messages_in_flight',
    help: 'Messages between the start of DATA and their reply',
    registers: [this.registry],
  });

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

  private registerScrapeTimeMetrics(): void {
    const sources = this.sources;
    const registers = [this.registry];
    new Gauge({
      name: 'lacre_smtp_sessions',
      help: 'Open inbound SMTP/LMTP connections (Postfix keeps some open between messages)',
      registers,
      collect() {
        if (sources.sessions) this.set(sources.sessions());
      },
    });
    this.registerKeyCacheMetrics();
    this.registerRelayPoolMetrics();
    this.registerReadinessMetrics();
    this.registerKeyCountMetrics();
  }

  private registerKeyCacheMetrics(): void {
    const sources = this.sources;
    const registers = [this.registry];
    const stat = (name: keyof KeyDirectoryStats) => sources.keyCache?.()[name];
    new Gauge({
      name: 'lacre_key_cache_entries',
      help: 'Addresses in the key cache (found and not found alike)',
      registers,
      collect() {
        const size = stat('size');
        if (size !== undefined) this.set(size);
      },
    });
    for (const [name, field, help] of [
      ['lacre_key_cache_hits_total', 'hits', 'Key lookups answered from the cache'],
      ['lacre_key_cache_misses_total', 'misses', 'Key lookups that read the key store'],
      ['lacre_key_cache_invalidations_total', 'invalidations', 'Times the whole key cache was dropped (key change notified, notifications reconnected)'],
    ] as const) {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const value = stat(field);
          if (value === undefined) return;
          // The directory keeps the running total; a counter can only be set by reset + inc.
          this.reset();
          this.inc(value);
        },
      });
    }
    new Gauge({
      name: 'lacre_key_cache_hit_ratio',
      help: 'Hits / (hits + misses) since start; for a recent ratio use rate() of the two counters',
      registers,
      collect() {
        const stats = sources.keyCache?.();
        if (stats && stats.hits + stats.misses > 0) this.set(stats.hits / (stats.hits + stats.misses));
      },
    });
  }

  private registerRelayPoolMetrics(): void {
    const sources = this.sources;
    const registers = [this.registry];
    const gauges: ReadonlyArray<readonly [string, string, (state: RelayPoolState) => number]> = [
      ['lacre_relay_pool_idle', "1 when nodemailer's relay pool can take another message without queueing it (its isIdle())", (s) => (s.idle ? 1 : 0)],
      ['lacre_relay_pool_pending_messages', "Messages nodemailer's relay pool has not finished: queued or being sent (its pendingCount())", (s) => s.pending],
      ['lacre_relay_pool_max_connections', 'Connections the relay pool may open: relay.max_connections, or fewer while the relay was seen to serve fewer at once', (s) => s.maxConnections],
    ];
    for (const [name, help, read] of gauges) {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const state = sources.relayPool?.();
          if (state) this.set(read(state));
        },
      });
    }
  }

  private registerReadinessMetrics(): void {
    const sources = this.sources;
    const registers = [this.registry];
    // Both gauges read the same cached run: the monitor behind `readiness` caches and bounds it (src/http/health.ts).
    new Gauge({
      name: 'lacre_ready',
      help: '1 when every readiness check passed (the same checks as GET /readyz, cached for a few seconds)',
      registers,
      async collect() {
        if (sources.readiness) this.set((await sources.readiness()).ready ? 1 : 0);
      },
    });
    new Gauge({
      name: 'lacre_ready_check_up',
      help: '1 when this readiness check passed: database (SELECT 1), relay (SMTP greeting), box (Incoming Box answers)',
      labelNames: ['check'],
      registers,
      async collect() {
        if (!sources.readiness) return;
        for (const check of (await sources.readiness()).checks) this.set({ check: check.name }, check.ok ? 1 : 0);
      },
    });
  }

  private registerKeyCountMetrics(): void {
    const sources = this.sources;
    const registers = [this.registry];
    const gauges: ReadonlyArray<readonly [string, string, keyof KeyCounts]> = [
      ['lacre_keys_confirmed', 'Distinct confirmed keys in the key store', 'confirmed'],
      ['lacre_keys_expiring_soon', 'Distinct confirmed keys that expire within the next 7 days', 'expiringSoon'],
      ['lacre_keys_expired', 'Distinct confirmed keys already expired (their recipients get encryption.on_unusable_key)', 'expired'],
    ];
    for (const [name, help, field] of gauges) {
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          // The source caches: the store is read at most every few minutes (src/metrics/key-counts.ts).
          const value = (await sources.keyCounts?.())?.[field];
          if (value !== undefined) this.set(value);
        },
      });
    }
  }
}
