/**
 * How many connections the relay serves at once, as Lacre learns it. Postfix's FILTER_README gives the
 * reinjection smtpd `maxproc` 10 while `relay.max_connections` defaults to 20: the connections over the
 * listener's process limit are accepted by the kernel but never greeted. When a connection gets no greeting
 * while others are open and greeted, those others are what the listener serves: that is its capacity.
 *
 * A learned capacity holds for `retryMs`, then `relay.max_connections` is tried again, so that a `maxproc`
 * raised later (and `postfix reload`) is used without restarting Lacre; if the listener is still smaller, the
 * next burst learns it again, its extra copies waiting one greeting timeout before they go out.
 */
export class RelayCapacity {
  private limit: number;
  private learnedAt: number | undefined;
  private reported = false;

  constructor(
    readonly configured: number,
    readonly retryMs: number,
  ) {
    this.limit = configured;
  }

  /** The connections the pool may open now. */
  current(now: number): number {
    if (this.learnedAt !== undefined && now - this.learnedAt >= this.retryMs) {
      this.limit = this.configured;
      this.learnedAt = undefined;
    }
    return this.limit;
  }

  /**
   * A connection got no greeting while `greeted` others were open. Returns true the first time (per process)
   * the capacity is found smaller than configured: the caller says so, once.
   */
  learn(greeted: number, now: number): boolean {
    // Nothing greeted at all: the relay is down or hung, which says nothing about its size.
    if (greeted === 0) return false;
    const limit = this.current(now);
    if (this.learnedAt === undefined && greeted >= limit) return false;
    this.limit = Math.min(limit, greeted);
    this.learnedAt = now;
    const first = !this.reported;
    this.reported = true;
    return first;
  }
}
