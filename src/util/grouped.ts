/**
 * Group commit for one kind of statement: what is submitted while a run is in flight waits for it, then all of it
 * goes in the next run. One statement per round trip instead of one per caller, and no caller waits longer than
 * one run before its own starts.
 */
export class Grouped<Item, Result> {
  private queued: Array<Waiting<Item, Result>> = [];
  private running = false;

  /** `run` answers one result per item, in order; when it fails, every item of that run fails with it. */
  constructor(private readonly run: (items: readonly Item[]) => Promise<readonly Result[]>) {}

  submit(item: Item): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      this.queued.push({ item, resolve, reject });
      if (!this.running) void this.runQueued();
    });
  }

  private async runQueued(): Promise<void> {
    this.running = true;
    while (this.queued.length > 0) {
      const group = this.queued;
      this.queued = [];
      try {
        const results = await this.run(group.map((waiting) => waiting.item));
        group.forEach((waiting, index) => waiting.resolve(results[index]!));
      } catch (error) {
        for (const waiting of group) waiting.reject(error);
      }
    }
    this.running = false;
  }
}

interface Waiting<Item, Result> {
  readonly item: Item;
  readonly resolve: (result: Result) => void;
  readonly reject: (error: unknown) => void;
}
