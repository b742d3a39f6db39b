/**
 * The public key service's listener (web.listen): the JSON API, the page and, with web.wkd, the Web Key Directory,
 * on the one HTTP stack. Sits behind a TLS reverse proxy in production: X-Forwarded-For is believed only from
 * web.trust_proxy. Bodies are capped at 64 KiB (413 too-large); a request must arrive within
 * web.request_timeout_seconds (408, connection closed).
 */
import type { AddressInfo } from 'node:net';
import type { FastifyReply } from 'fastify';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/types.js';
import { HttpError } from '../errors.js';
import { closeHttpStack, createHttpStack, listenOn, NODE_TIMEOUTS, pathOf, type HttpTimeouts } from '../http/stack.js';
import type { Logger } from '../log/logger.js';
import { registerApiRoutes, WEB_BODY_LIMIT } from './api.js';
import { WebError, type WebErrorCode } from './errors.js';
import { catalogs as loadCatalogs, type Catalogs } from './i18n.js';
import type { Mailer } from './mailer.js';
import { registerPageRoutes } from './page.js';
import { KeyService } from './service.js';
import { registerWkdRoutes } from './wkd.js';

/** What every route module of the web listener receives (one object per listener: rate-limit.ts keys on it). */
export interface WebDeps {
  service: KeyService;
  config: Config;
  catalogs: Catalogs;
  logger: Logger;
  db: Database;
}

export interface WebServerOptions {
  config: Config;
  db: Database;
  mailer: Mailer;
  logger: Logger;
  /** For tests of expiry: the service's clock. */
  clock?: () => Date;
}

export interface WebServer {
  address: AddressInfo;
  service: KeyService;
  close(): Promise<void>;
}

const CLOSE_GRACE_MS = 5_000;
/** Node's 30 s check would let a 30 s request timeout run to a minute; looking each second costs little. */
const TIMEOUT_CHECK_MS = 1_000;

export async function startWebServer(options: WebServerOptions): Promise<WebServer> {
  const { config, db, mailer, logger } = options;
  const service = new KeyService({ db, config, mailer, logger, ...(options.clock ? { clock: options.clock } : {}) });
  const catalogs = loadCatalogs();
  const app = createHttpStack({
    logger,
    trustProxy: config.web.trust_proxy,
    pathsHoldSecrets: true,
    bodyLimit: WEB_BODY_LIMIT,
    timeouts: webTimeouts(config),
    sendError: (reply, error) => sendWebError(reply, error, catalogs, config.web.default_language),
  });
  const deps: WebDeps = { service, config, catalogs, logger, db };
  registerApiRoutes(app, deps);
  registerPageRoutes(app, deps);
  if (config.web.wkd) registerWkdRoutes(app, deps);
  const address = await listenOn(app, config.web.listen ?? '127.0.0.1:0', 'web.listen');
  return { address, service, close: () => closeHttpStack(app, CLOSE_GRACE_MS) };
}

/** The whole request (headers and body) within web.request_timeout_seconds; the headers within that too. */
function webTimeouts(config: Config): Partial<HttpTimeouts> {
  const requestMs = config.web.request_timeout_seconds * 1000;
  return { requestMs, headersMs: Math.min(NODE_TIMEOUTS.headersMs, requestMs), checkEveryMs: Math.min(TIMEOUT_CHECK_MS, requestMs) };
}

/** A refusal in the client's language: `{"error","message"}` under /api/, the message as text elsewhere. */
export function sendWebError(reply: FastifyReply, error: HttpError, catalogs: Catalogs, fallbackLanguage: string): void {
  const refusal = error instanceof WebError ? error : asWebError(error);
  const request = reply.request;
  const query = (request.query ?? {}) as Record<string, unknown>;
  const lang = catalogs.choose(typeof query.lang === 'string' ? query.lang : undefined, request.headers['accept-language'], fallbackLanguage);
  const message = catalogs.translator(lang)(refusal.msgid, refusal.values);
  void reply.code(refusal.status).headers({ ...error.headers, ...refusal.headers, 'Content-Language': lang });
  if (pathOf(request).startsWith('/api/')) void reply.type('application/json; charset=utf-8').send(JSON.stringify({ error: refusal.code, message }));
  else void reply.type('text/plain; charset=utf-8').send(message);
}

/** The stack's own refusals (404, 405, 413, a bad URL, a 500) under the stable codes. */
function asWebError(error: HttpError): WebError {
  const known: Record<number, [WebErrorCode, string]> = {
    404: ['not-found', 'There is nothing here.'],
    405: ['method-not-allowed', 'This method is not allowed here.'],
    413: ['too-large', 'The request is too large.'],
  };
  const [code, msgid] = known[error.status] ?? (error.status < 500 ? ['invalid-request', 'The request is not valid.'] : ['unavailable', 'Something went wrong on our side. Please try again later.']);
  return new WebError(error.status, code, msgid, {}, error.headers);
}
