/**
 * An HTTP forwarder between Lacre and its Incoming Box whose answers a scenario switches: healthy (forward),
 * 500 to every request, hanging (the request is read, no answer ever comes), or 507 for one user's requests.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type BoxFault = { kind: 'healthy' } | { kind: 'error500' } | { kind: 'hang' } | { kind: 'full'; user: string };

export class BoxFaultProxy {
  fault: BoxFault = { kind: 'healthy' };
  port = 0;
  private server: Server | undefined;

  constructor(private readonly boxPort: number) {}

  async start(): Promise<void> {
    const server = createServer((incoming, answer) => {
      const fault = this.fault;
      if (fault.kind === 'hang') return void incoming.resume();
      if (fault.kind === 'error500' || (fault.kind === 'full' && (incoming.url ?? '').includes(fault.user))) {
        incoming.resume();
        return void incoming.once('end', () => answer.writeHead(fault.kind === 'full' ? 507 : 500).end());
      }
      const upstream = request({ host: '127.0.0.1', port: this.boxPort, method: incoming.method, path: incoming.url, headers: incoming.headers }, (reply) => {
        answer.writeHead(reply.statusCode ?? 502, reply.headers);
        reply.pipe(answer);
      });
      upstream.on('error', () => answer.destroy());
      incoming.pipe(upstream);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', () => resolve()));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    server?.closeAllConnections();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
