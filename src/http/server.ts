/**
 * The operators' HTTP listener (http.listen, loopback by default; no authentication):
 *   GET /metrics          Prometheus text (src/metrics/metrics.ts)
 *   GET /healthz          the process is up: 200 {"status":"ok"}
 *   GET /readyz           database, relay and (when configured) Incoming Box reachable: 200 or 503, each check named
 *   GET|PUT /admin/log-level   read or set the log level: PUT {"level":"debug"}
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger.js';
import { LacreError } from '../errors.js';
import type { LacreMetrics } from '../metrics/metrics.js';
import type { HealthMonitor } from './health.js';
import { isLogLevel, LOG_LEVELS, type LogLevelControl } from './log-level.js';
import { parseHostPort } from '../util/host-port.js';

export interface HttpListenerOptions {
  /** host:port (port 0 picks a free one). */
  readonly listen: string;
  readonly logger: Logger;
  readonly health: HealthMonitor;
  readonly logLevel: LogLevelControl;
  readonly metrics?: LacreMetrics | undefined;
}

export interface HttpListener {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024;

type Handler = (request: IncomingMessage, response: ServerResponse) => Promise<void>;

export async function startHttpListener(options: HttpListenerOptions): Promise<HttpListener> {
  const routes = routeTable(options);
  const server = createServer((request, response) => {
    handle(routes, request, response).catch((error: unknown) => {
      options.logger.error({ err: error, path: request.url }, 'HTTP request failed');
      if (!response.headersSent) sendJson(response, 500, { error: 'internal error' });
      else response.destroy();
    });
  });
  const address = await listen(server, options.listen);
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Prometheus keeps its connection alive between scrapes: do not wait for it to go.
        server.closeAllConnections();
      }),
  };
}

function routeTable(options: HttpListenerOptions): Map<string, Partial<Record<string, Handler>>> {
  return new Map<string, Partial<Record<string, Handler>>>([
    ['/metrics', { GET: (_request, response) => sendMetrics(response, options.metrics) }],
    ['/healthz', { GET: async (_request, response) => sendJson(response, 200, { status: 'ok' }) }],
    ['/readyz', { GET: (_request, response) => sendReadiness(response, options.health) }],
    [
      '/admin/log-level',
      {
        GET: async (_request, response) => sendJson(response, 200, { level: options.logLevel.level }),
        PUT: (request, response) => setLogLevel(request, response, options.logLevel),
      },
    ],
  ]);
}

async function handle(routes: Map<string, Partial<Record<string, Handler>>>, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const path = new URL(request.url ?? '/', 'http://localhost').pathname;
  const methods = routes.get(path);
  if (!methods) return sendJson(response, 404, { error: `no such endpoint: ${path}` });
  const method = request.method === 'HEAD' ? 'GET' : (request.method ?? 'GET');
  const handler = methods[method];
  if (!handler) {
    response.setHeader('Allow', Object.keys(methods).join(', '));
    return sendJson(response, 405, { error: `${request.method} not allowed on ${path}` });
  }
  await handler(request, response);
}

async function sendMetrics(response: ServerResponse, metrics: LacreMetrics | undefined): Promise<void> {
  if (!metrics) return sendJson(response, 404, { error: 'metrics are not collected in this process' });
  const text = await metrics.scrape();
  response.writeHead(200, { 'Content-Type': metrics.contentType });
  response.end(text);
}

async function sendReadiness(response: ServerResponse, health: HealthMonitor): Promise<void> {
  const report = await health.check();
  const failed = report.checks.filter((check) => !check.ok).map((check) => check.name);
  sendJson(response, report.ready ? 200 : 503, { status: report.ready ? 'ready' : 'unready', failed, checks: report.checks });
}

async function setLogLevel(request: IncomingMessage, response: ServerResponse, control: LogLevelControl): Promise<void> {
  let body: unknown;
  try {
    body = JSON.parse(await readBody(request));
  } catch (error) {
    return sendJson(response, 400, { error: `expected a JSON body like {"level":"debug"}: ${(error as Error).message}` });
  }
  const level = (body as { level?: unknown } | null)?.level;
  if (!isLogLevel(level)) return sendJson(response, 400, { error: `"level" must be one of ${LOG_LEVELS.join(', ')}` });
  sendJson(response, 200, control.set(level, 'http'));
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    request.setEncoding('utf8');
    // Past the limit the rest is drained unread, so that the 400 still reaches the client.
    request.on('data', (chunk: string) => {
      if (text.length <= MAX_BODY_BYTES) text += chunk;
    });
    request.on('end', () => (text.length > MAX_BODY_BYTES ? reject(new Error(`body over ${MAX_BODY_BYTES} bytes`)) : resolve(text)));
    request.on('error', reject);
  });
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  response.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
  response.end(text);
}

function listen(server: Server, listen: string): Promise<AddressInfo> {
  const { host, port } = parseHostPort(listen);
  return new Promise((resolve, reject) => {
    server.once('error', (error: Error) => reject(new LacreError(`http.listen ${listen}: ${error.message}`, { cause: error })));
    server.listen(port, host, () => resolve(server.address() as AddressInfo));
  });
}
