import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/** Decides, for one connection, whether a chunk from the client ends it instead of being forwarded. */
export type CutRule = (fromClient: Buffer) => boolean;

/** One proxied connection; once stalled it never forwards another byte, either way. */
interface Link {
  stalled: boolean;
}

/** A loopback TCP forwarder that a test can cut and restore, to take a real server "down" for one client. */
export class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly links = new Set<Link>();
  private stalling = false;
  port = 0;

  /** `cutRule` makes a fresh rule for every connection (each keeps its own count of what it saw). */
  constructor(private readonly targetHost: string, private readonly targetPort: number, private readonly cutRule?: () => CutRule) {}

  async start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, this.targetHost);
      const link: Link = { stalled: this.stalling };
      this.links.add(link);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => undefined);
      }
      const cut = this.cutRule?.();
      client.on('data', (chunk: Buffer) => {
        if (link.stalled) return;
        if (!cut?.(chunk)) return void upstream.write(chunk);
        client.destroy();
        upstream.destroy();
      });
      upstream.on('data', (chunk: Buffer) => {
        if (!link.stalled) client.write(chunk);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => {
        this.links.delete(link);
        client.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.port, '127.0.0.1', () => resolve()));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /**
   * The server goes quiet without going away: connections stay open (new ones are accepted) but nothing
   * more is forwarded on them, ever, even after `resume`; bytes sent meanwhile are lost.
   */
  stall(): void {
    this.stalling = true;
    for (const link of this.links) link.stalled = true;
  }

  /** New connections are forwarded again; those stalled stay dead. */
  resume(): void {
    this.stalling = false;
  }

  /** Refuses new connections and drops the open ones. */
  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
