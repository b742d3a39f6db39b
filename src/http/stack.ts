/**
 * The one HTTP stack every Lacre listener is built on (the operators' endpoints, the Incoming Box, and the
 * key service to come): fastify with Lacre's defaults.
 *
 * - A request body is never read unless a route asks for it: by default it is left in `request.raw`,
 *   whatever its content type, for the handler to stream (`acceptJsonBodies` reads small JSON bodies in a
 *   scope). "Expect: 100-continue" is answered by whoever reads the body (`askForBody`), so a refusal goes
 *   out before the client sends a byte of it.
 * - Refusals are typed: a handler or hook throws HttpError, schema validation and fastify's own refusals
 *   (body too large, bad URL) become one too, and `sendError` writes each one; anything else is a 500 and
 *   one log line with the method and path (never a body, a query string or a header).
 * - Schemas validate values as sent, without coercion.
 * - Timeouts are explicit, defaulting to Node's own.
 */
import { chmod } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { fastify, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchema } from 'fastify';
import { HttpError, LacreError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { parseHostPort } from '../util/host-port.js';

export type HttpApp = FastifyInstance;

export interface HttpTimeouts {
  /** Headers and body of one request (0: no limit). */
  readonly requestMs: number;
  readonly headersMs: number;
  /** A connection silent this long is dropped (0: never). */
  readonly idleMs: number;
  /** How long an idle kept-alive connection waits for the next request. */
  readonly keepAliveMs: number;
  /** How often Node looks for requests past requestMs or headersMs: a timeout fires up to this much late. */
  readonly checkEveryMs: number;
}

/** Node's http.Server defaults: fastify's own differ (no request timeout, 72 s keep-alive). */
export const NODE_TIMEOUTS: HttpTimeouts = { requestMs: 300_000, headersMs: 60_000, idleMs: 0, keepAliveMs: 5_000, checkEveryMs: 30_000 };

export interface HttpStackOptions {
  /** Where failures are logged. */
  readonly logger: Logger;
  readonly timeouts?: Partial<HttpTimeouts>;
  /** Answer HEAD on every GET route (fastify's exposeHeadRoutes); otherwise HEAD is a method like any other. */
  readonly headRoutes?: boolean;
  /** Whether the stack's own 404 and 405 say what was wrong in their body, or send it empty. */
  readonly explain?: boolean;
  /** Paths may hold a secret (the key service's confirmation tokens): log lines name the route's pattern instead. */
  readonly pathsHoldSecrets?: boolean;
  /** Refuse properties a body schema does not name (`additionalProperties: false`), instead of dropping them unseen. */
  readonly refuseUnknownProperties?: boolean;
  /** Writes a refusal; by default its body as text/plain. */
  readonly sendError?: (reply: FastifyReply, error: HttpError) => void;
  /** Proxies whose X-Forwarded-For names the client (request.ip); by default none: the socket's peer is the client. */
  readonly trustProxy?: readonly string[];
  /** Largest body a content-type parser reads (413 beyond); fastify's 1 MiB by default. */
  readonly bodyLimit?: number;
}

const TEXT = 'text/plain; charset=utf-8';
/** sun_path holds 108 bytes on Linux, the terminating NUL included. */
const MAX_SOCKET_PATH_BYTES = 107;
/** The router's cap on one path parameter (414 beyond): as long as Node lets a request line be, so that schemas decide. */
const MAX_PARAM_LENGTH = 16 * 1024;

/** A fastify instance with Lacre's defaults; add routes, then `listenOn`. */
export function createHttpStack(options: HttpStackOptions): HttpApp {
  const timeouts = { ...NODE_TIMEOUTS, ...options.timeouts };
  const sendError = options.sendError ?? sendTextError;
  const app = fastify({
    logger: false,
    requestTimeout: timeouts.requestMs,
    connectionTimeout: timeouts.idleMs,
    keepAliveTimeout: timeouts.keepAliveMs,
    http: { connectionsCheckingInterval: timeouts.checkEveryMs },
    exposeHeadRoutes: options.headRoutes ?? true,
    // As plain node:http does: a request arriving on a kept-alive connection while closing is still served.
    return503OnClosing: false,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Values are validated as sent: a query parameter or header is a string (a schema gives its pattern), and
    // a JSON body is not bent to fit ("x" is not ["x"], "1" is not 1).
    ajv: { customOptions: { coerceTypes: false, ...(options.refuseUnknownProperties ? { removeAdditional: false } : {}) } },
    schemaErrorFormatter: describeInvalid,
    frameworkErrors: (error, _request, reply) => sendError(reply, frameworkRefusal(error)),
    ...(options.trustProxy && options.trustProxy.length > 0 ? { trustProxy: [...options.trustProxy] } : {}),
    ...(options.bodyLimit === undefined ? {} : { bodyLimit: options.bodyLimit }),
  });
  app.server.headersTimeout = timeouts.headersMs;
  // With a listener here, Node leaves "100 Continue" to the route (askForBody).
  app.server.on('checkContinue', (request, response) => app.routing(request, response));
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
  app.setErrorHandler((error: FastifyError | Error, request, reply) => {
    const refusal = asRefusal(error, request, options.logger, options.pathsHoldSecrets === true);
    if (reply.raw.headersSent) reply.raw.destroy();
    else sendError(reply, refusal);
  });
  app.setNotFoundHandler((request, reply) => {
    sendError(reply, new HttpError(404, options.explain ? `no such endpoint: ${pathOf(request)}` : ''));
  });
  return app;
}

/** Binds `listen` ("host:port"); `setting` names the configuration key in the error when that fails. */
export async function listenOn(app: HttpApp, listen: string, setting: string): Promise<AddressInfo> {
  const { host, port } = parseHostPort(listen);
  try {
    await app.listen({ host, port });
  } catch (error) {
    throw new LacreError(`${setting} ${listen}: ${(error as Error).message}`, { cause: error });
  }
  return app.server.address() as AddressInfo;
}

/**
 * Binds a Unix socket at `path`, mode 0600 whatever the umask: the socket is created under umask 0177 (so no
 * moment exists when others may connect) and chmod-ed after, for filesystems that ignore the umask on sockets.
 * `setting` names the configuration key in the error when that fails.
 */
export async function listenOnPath(app: HttpApp, path: string, setting: string): Promise<void> {
  // Node 20 silently cuts a longer path to fit sockaddr_un, binding a socket elsewhere.
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new LacreError(`${setting} ${path}: a Unix socket path may be at most ${MAX_SOCKET_PATH_BYTES} bytes long; choose a shorter one`);
  }
  const previous = process.umask(0o177);
  try {
    await app.listen({ path });
  } catch (error) {
    throw new LacreError(`${setting} ${path}: ${(error as Error).message}`, { cause: error });
  } finally {
    process.umask(previous);
  }
  await chmod(path, 0o600);
}

/** Stops accepting, lets requests in flight finish for up to `graceMs`, then drops what is left. */
export async function closeHttpStack(app: HttpApp, graceMs: number): Promise<void> {
  const force = setTimeout(() => app.server.closeAllConnections(), graceMs);
  try {
    await app.close();
  } finally {
    clearTimeout(force);
  }
}

/**
 * Every other method on `url` is refused with 405 and `Allow`. Registered in the scope of the allowed
 * routes, it passes the same hooks (authentication first) and, given `schema`, the same validation.
 */
export function allowOnly(scope: HttpApp, url: string, allowed: readonly string[], options: { explain?: boolean; schema?: FastifySchema } = {}): void {
  const headFollowsGet = (scope.initialConfig as { exposeHeadRoutes?: boolean }).exposeHeadRoutes === true && allowed.includes('GET');
  const others = scope.supportedMethods.filter((method) => !allowed.includes(method) && !(method === 'HEAD' && headFollowsGet));
  scope.route({
    method: others,
    url,
    ...(options.schema ? { schema: options.schema } : {}),
    handler: async (request) => {
      throw new HttpError(405, options.explain ? `${request.method} not allowed on ${pathOf(request)}` : '', { Allow: allowed.join(', ') });
    },
  });
}

/**
 * In this scope, a body of any content type (or none named) is read as JSON, up to `limit` bytes (413
 * beyond); one that does not parse is refused with `invalid(error)`.
 */
export function acceptJsonBodies(scope: HttpApp, limit: number, invalid: (error: Error) => HttpError): void {
  scope.addHook('preParsing', (request, reply, payload, done) => {
    askForBody(request, reply);
    done(null, payload);
  });
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', { parseAs: 'string', bodyLimit: limit }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch (error) {
      done(invalid(error as Error), undefined);
    }
  });
}

/** Sends "100 Continue" when the client waits for it: call just before reading `request.raw`. */
export function askForBody(request: FastifyRequest, reply: FastifyReply): void {
  if (/^100-continue$/i.test(request.headers.expect ?? '')) reply.raw.writeContinue();
}

/** The request's path, without the query string (which may carry what a log line must not). */
export function pathOf(request: FastifyRequest): string {
  const query = request.url.indexOf('?');
  return query === -1 ? request.url : request.url.slice(0, query);
}

export function sendTextError(reply: FastifyReply, error: HttpError): void {
  void reply.code(error.status).headers(error.headers).type(TEXT).send(error.body);
}

function asRefusal(error: FastifyError | Error, request: FastifyRequest, logger: Logger, pathsHoldSecrets: boolean): HttpError {
  if (error instanceof HttpError) return error;
  const status = (error as FastifyError).statusCode;
  if ('validation' in error || (status !== undefined && status >= 400 && status < 500)) return new HttpError(status ?? 400, error.message);
  const where = { method: request.method, ...(pathsHoldSecrets ? { route: request.routeOptions.url } : { path: pathOf(request) }), err: error };
  if (request.raw.destroyed && !request.raw.complete) logger.info(where, 'request aborted by the client');
  else logger.error(where, 'HTTP request failed');
  return new HttpError(500, 'Internal Server Error');
}

function frameworkRefusal(error: FastifyError): HttpError {
  if (error.code === 'FST_ERR_BAD_URL') return new HttpError(400, 'invalid path');
  return new HttpError(error.statusCode ?? 400, error.message);
}

interface SchemaIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

/** A schema refusal as a short sentence naming the field: `"level" must be one of …`, `invalid limit`. */
function describeInvalid(errors: readonly SchemaIssue[], part: string): Error {
  const issue = errors[0]!;
  const field = issue.instancePath.slice(1) || (issue.params.missingProperty as string | undefined) || part;
  if (issue.keyword === 'enum') return new Error(`"${field}" must be one of ${(issue.params.allowedValues as unknown[]).join(', ')}`);
  if (issue.keyword === 'required') return new Error(`"${field}" is required`);
  return new Error(`invalid ${field}${issue.keyword === 'type' ? `: ${issue.message}` : ''}`);
}
