/**
 * The operators' HTTP listener (http.listen, loopback by default; no authentication):
 *   GET /metrics          Prometheus text (src/metrics/metrics.ts)
 *   GET /healthz          the process is up: 200 {"status":"ok"}
 *   GET /readyz           database, relay and (when configured) Incoming Box reachable: 200 or 503, each check named
 *   GET|PUT /admin/log-level   read or set the log level: PUT {"level":"debug"}
 */
import type { AddressInfo } from 'node:net';
import type { FastifyReply } from 'fastify';
import { HttpError } from '../errors.js';
import type { Logger, LogLevel } from '../log/logger.js';
import type { LacreMetrics } from '../metrics/metrics.js';
import type { HealthMonitor } from './health.js';
import { LOG_LEVELS, type LogLevelControl } from './log-level.js';
import { acceptJsonBodies, allowOnly, closeHttpStack, createHttpStack, listenOn, type HttpApp } from './stack.js';

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
const JSON_TYPE = 'application/json; charset=utf-8';
const LEVEL_BODY = { type: 'object', required: ['level'], properties: { level: { enum: LOG_LEVELS } } } as const;

export async function startHttpListener(options: HttpListenerOptions): Promise<HttpListener> {
  const app = createHttpStack({ logger: options.logger, explain: true, sendError: (reply, error) => sendJson(reply, error.status, { error: error.body }, error.headers) });
  addRoutes(app, options);
  const address = await listenOn(app, options.listen, 'http.listen');
  // Prometheus keeps its connection alive between scrapes: do not wait for it to go.
  return { address, close: () => closeHttpStack(app, 0) };
}

function addRoutes(app: HttpApp, options: HttpListenerOptions): void {
  const { metrics, health, logLevel } = options;
  app.get('/metrics', async (_request, reply) => {
    if (!metrics) throw new HttpError(404, 'metrics are not collected in this process');
    const text = await metrics.scrape();
    return reply.type(metrics.contentType).send(text);
  });
  app.get('/healthz', async (_request, reply) => sendJson(reply, 200, { status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const report = await health.check();
    const failed = report.checks.filter((check) => !check.ok).map((check) => check.name);
    return sendJson(reply, report.ready ? 200 : 503, { status: report.ready ? 'ready' : 'unready', failed, checks: report.checks });
  });
  app.get('/admin/log-level', async (_request, reply) => sendJson(reply, 200, { level: logLevel.level }));
  void app.register(async (scope) => {
    acceptJsonBodies(scope, MAX_BODY_BYTES, (error) => new HttpError(400, `expected a JSON body like {"level":"debug"}: ${error.message}`));
    scope.put<{ Body: { level: LogLevel } }>('/admin/log-level', { schema: { body: LEVEL_BODY } }, async (request, reply) =>
      sendJson(reply, 200, logLevel.set(request.body.level, 'http')),
    );
  });
  for (const url of ['/metrics', '/healthz', '/readyz']) allowOnly(app, url, ['GET'], { explain: true });
  allowOnly(app, '/admin/log-level', ['GET', 'PUT'], { explain: true });
}

function sendJson(reply: FastifyReply, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): FastifyReply {
  return reply.code(status).headers({ ...headers, 'Cache-Control': 'no-store' }).type(JSON_TYPE).send(`${JSON.stringify(body)}\n`);
}
