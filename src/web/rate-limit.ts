/**
 * The per-client limit on state-changing requests (web.requests_per_ip_per_hour): a sliding hour per client
 * address, in memory (one instance's view; a restart forgets, which only ever lets a client through early). The
 * client address is fastify's request.ip, which believes X-Forwarded-For only from web.trust_proxy.
 */
import type { FastifyRequest } from 'fastify';
import { WebError } from './errors.js';

const HOUR_MS = 3_600_000;
/** Forget idle clients once this many are tracked, so that a scan of many addresses cannot grow memory for good. */
const SWEEP_AT = 10_000;

export class SlidingWindowLimit {
  private readonly hits = new Map<string, number[]>();

  constructor(
    private readonly limit: number,
    private readonly windowMs = HOUR_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one request of `client`; throws WebError 429 (with Retry-After) when it is one too many. */
  hit(client: string): void {
    const now = this.now();
    const recent = (this.hits.get(client) ?? []).filter((at) => at > now - this.windowMs);
    if (recent.length >= this.limit) {
      this.hits.set(client, recent);
      const seconds = Math.max(1, Math.ceil((recent[0]! + this.windowMs - now) / 1000));
      throw new WebError(429, 'too-many-requests', 'Too many requests from your address; try again in {seconds} seconds.', { seconds }, { 'Retry-After': String(seconds) });
    }
    recent.push(now);
    this.hits.set(client, recent);
    if (this.hits.size > SWEEP_AT) this.sweep(now);
  }

  private sweep(now: number): void {
    for (const [client, times] of this.hits) if (times.at(-1)! <= now - this.windowMs) this.hits.delete(client);
  }
}

const limits = new WeakMap<object, SlidingWindowLimit>();

/**
 * The preHandler every state-changing route of the API and the page uses: one shared count per client address for
 * the whole web listener (`owner` is the listener's WebDeps, the same object every route module receives).
 */
export function limitPerIp(owner: { readonly config: { readonly web: { readonly requests_per_ip_per_hour: number } } }): (request: FastifyRequest) => Promise<void> {
  let limit = limits.get(owner);
  if (!limit) {
    limit = new SlidingWindowLimit(owner.config.web.requests_per_ip_per_hour);
    limits.set(owner, limit);
  }
  const shared = limit;
  return async (request) => shared.hit(clientKey(request.ip));
}

/**
 * Who is counted: an IPv4 address, or the /64 an IPv6 address is in (one subscriber's whole network: counting its
 * single addresses would let it rotate through 2^64 of them). An IPv4-mapped IPv6 address counts as its IPv4.
 */
export function clientKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!ip.includes(':')) return ip;
  const [head = '', tail = ''] = ip.split('%')[0]!.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = ip.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((group) => parseInt(group, 16).toString(16)).join(':')}::/64`;
}
