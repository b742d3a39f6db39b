import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A loopback listener that behaves like a Postfix `inet` service with a `maxproc` limit in front of a real SMTP
 * server: the kernel accepts every connection, but only `capacity` of them are served (forwarded to the server,
 * which greets them) at a time. The others wait, accepted but never greeted, until a served one closes; a waiting
 * connection its client gave up on is dropped, as smtpd drops one it finds closed.
 */
export class MaxprocListener {
  private server: Server | undefined;
  private readonly waiting: Socket[] = [];
  private readonly served = new Set<Socket>();
  port = 0;
  /** Connections that had to wait for a free slot, since the start. */
  heldTotal = 0;
  /** The most connections served at once, since the start. */
  mostServed = 0;

  private constructor(private readonly targetPort: number, private capacity: number) {}

  static async start(targetPort: number, capacity: number): Promise<MaxprocListener> {
    const listener = new MaxprocListener(targetPort, capacity);
    const server = createServer((client) => listener.accept(client));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', () => resolve()));
    listener.server = server;
    listener.port = (server.address() as AddressInfo).port;
    return listener;
  }

  /** Raises (or lowers) the number served at once: `maxproc` changed and Postfix reloaded. */
  setCapacity(capacity: number): void {
    this.capacity = capacity;
    this.serveWaiting();
  }

  async stop(): Promise<void> {
    for (const socket of [...this.waiting, ...this.served]) socket.destroy();
    this.waiting.length = 0;
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined);
    if (this.served.size < this.capacity) return this.serve(client);
    this.heldTotal += 1;
    this.waiting.push(client);
    client.once('close', () => {
      const at = this.waiting.indexOf(client);
      if (at >= 0) this.waiting.splice(at, 1);
    });
  }

  private serve(client: Socket): void {
    this.served.add(client);
    this.mostServed = Math.max(this.mostServed, this.served.size);
    const upstream = connect(this.targetPort, '127.0.0.1');
    upstream.on('error', () => undefined);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      if (this.served.delete(client)) this.serveWaiting();
    };
    client.once('close', end);
    upstream.once('close', end);
  }

  private serveWaiting(): void {
    while (this.served.size < this.capacity && this.waiting.length > 0) {
      const next = this.waiting.shift()!;
      if (!next.destroyed) this.serve(next);
    }
  }
}
