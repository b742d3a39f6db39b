/**
 * The admin socket: `lacre serve` takes key administration on a Unix socket (admin.socket), mode 0600 in a 0700
 * directory, so that only the service's user (and root) can reach it: the filesystem is the authentication.
 * `lacre keys` talks to it while the service runs (the embedded database opens in one process only), and
 * scripts may too: small JSON routes over HTTP (docs/admin-socket.md).
 */
import { lstat, rm, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname, resolve } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/types.js';
import { HttpError, LacreError } from '../errors.js';
import { acceptJsonBodies, closeHttpStack, createHttpStack, listenOnPath, type HttpApp } from '../http/stack.js';
import { KeyStore } from '../keys/store.js';
import type { Logger } from '../log/logger.js';
import { packageVersion } from '../util/package-version.js';
import { ensurePrivateDirectory } from '../util/private-dir.js';
import { ADMIN_REFUSAL_STATUS, AdminRefusal, LocalKeyAdmin, type AdminRefusalCode, type KeyAdmin } from './operations.js';

export interface AdminSocket {
  /** The socket's absolute path. */
  readonly path: string;
  /** Stops taking requests (those in flight finish) and removes the socket file. */
  close(): Promise<void>;
}

/** What GET / answers: a client knows it reached Lacre, and how large a key may be. */
export interface AdminHello {
  service: 'lacre-admin';
  version: string;
  maxKeyBytes: number;
}

const CLOSE_GRACE_MS = 5_000;
/** Time for the socket found at start to show whether someone listens on it. */
const PROBE_TIMEOUT_MS = 2_000;
const STYLES = ['mime', 'inline'];
const STATUSES = ['pending', 'confirmed', 'disabled'];

/** Starts the admin socket named by admin.socket; undefined when it is "" (off). */
export async function startAdminSocket(config: Config, db: Database, logger: Logger): Promise<AdminSocket | undefined> {
  if (config.admin.socket === '') return undefined;
  const path = resolve(config.admin.socket);
  ensurePrivateDirectory(dirname(path), 'admin.socket');
  await clearStaleSocket(path, logger);
  const app = buildAdminApp(new LocalKeyAdmin(new KeyStore(db, config.keys)), logger);
  try {
    await listenOnPath(app, path, 'admin.socket');
  } catch (error) {
    await app.close();
    throw error;
  }
  return {
    path,
    async close() {
      await closeHttpStack(app, CLOSE_GRACE_MS);
      await rm(path, { force: true });
    },
  };
}

/**
 * A socket file left by a service that died is removed; one another service answers on is an error naming it
 * (two services would each take some of the `lacre keys` commands). Anything else at the path is left alone.
 */
async function clearStaleSocket(path: string, logger: Logger): Promise<void> {
  const stats = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (stats === undefined) return;
  if (!stats.isSocket()) throw new LacreError(`admin.socket ${path} exists and is not a socket: move it away or set another admin.socket`);
  if (await socketAnswers(path)) {
    throw new LacreError(`admin.socket ${path}: another lacre serve answers there; stop it, or give this one another admin.socket`);
  }
  await unlink(path);
  logger.info({ socket: path }, 'removed a stale admin socket (nobody answered on it)');
}

/** Whether something accepts connections at `path`; a socket that neither accepts nor refuses counts as alive. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    const done = (answer: boolean | Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (answer instanceof Error) reject(answer);
      else resolve(answer);
    };
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    socket.once('connect', () => done(true));
    socket.once('error', (error: NodeJS.ErrnoException) => {
      done(error.code === 'ECONNREFUSED' ? false : new LacreError(`admin.socket ${path}: ${error.message}`, { cause: error }));
    });
  });
}

/** A refusal on the socket, carrying its code for the JSON body. */
class AdminHttpError extends HttpError {
  constructor(readonly code: AdminRefusalCode | 'internal', status: number, message: string) {
    super(status, message);
  }
}

/** The routes, on the one HTTP stack; exported for tests that serve it on a path of their own. */
export function buildAdminApp(admin: KeyAdmin, logger: Logger): HttpApp {
  const app = createHttpStack({ logger, headRoutes: false, explain: true, refuseUnknownProperties: true, sendError: sendJsonError });
  // Base64 makes the bytes a third larger; the rest of the body is small.
  const bodyLimit = Math.ceil((admin.maxKeyBytes * 4) / 3) + 64 * 1024;
  void app.register(async (scope) => {
    acceptJsonBodies(scope, bodyLimit, (error) => new AdminHttpError('invalid-request', 400, `the body is not JSON: ${error.message}`));
    registerRoutes(scope, admin, logger);
  });
  return app;
}

interface Target {
  Params: { target: string };
}

function registerRoutes(app: HttpApp, admin: KeyAdmin, logger: Logger): void {
  app.get('/', async (): Promise<AdminHello> => ({ service: 'lacre-admin', version: packageVersion(), maxKeyBytes: admin.maxKeyBytes }));
  app.get('/keys', answer(async () => ({ keys: await admin.list() })));
  app.get('/pending', answer(async () => ({ keys: await admin.pending() })));
  app.get<Target>('/keys/:target', answer(async (request: FastifyRequest<Target>) => ({ keys: await admin.show(request.params.target) })));

  app.post<{ Body: ImportBody }>(
    '/keys',
    { schema: { body: IMPORT_SCHEMA } },
    answer(async (request: FastifyRequest<{ Body: ImportBody }>) => {
      const outcomes = await admin.importKeys({ ...request.body, key: importedBytes(request.body) });
      for (const outcome of outcomes) {
        if (outcome.kind !== 'refused') logger.info({ operation: 'import', fingerprint: outcome.fingerprint, emails: outcome.emails }, 'admin socket: key imported');
      }
      return { outcomes };
    }),
  );
  app.post<Target>(
    '/keys/:target/disable',
    answer(async (request: FastifyRequest<Target>) => {
      const disabled = await admin.disable(request.params.target);
      logger.info({ operation: 'disable', target: request.params.target, disabled }, 'admin socket: keys disabled');
      return { disabled };
    }),
  );
  app.post<Target & { Body: { address?: string } | undefined }>(
    '/keys/:target/restore',
    { schema: { body: RESTORE_SCHEMA } },
    answer(async (request: FastifyRequest<Target & { Body: { address?: string } | undefined }>) => {
      const restored = await admin.restore(request.params.target, request.body?.address);
      logger.info({ operation: 'restore', ...restored }, 'admin socket: key restored');
      return restored;
    }),
  );
  app.delete<Target>(
    '/keys/:target',
    answer(async (request: FastifyRequest<Target>) => {
      const removed = await admin.remove(request.params.target);
      logger.info({ operation: 'remove', target: request.params.target, removed }, 'admin socket: keys removed');
      return { removed };
    }),
  );
}

interface ImportBody {
  armored?: string;
  base64?: string;
  emails?: string[];
  style?: 'mime' | 'inline';
  status?: 'pending' | 'confirmed' | 'disabled';
}

const IMPORT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    armored: { type: 'string' },
    base64: { type: 'string' },
    emails: { type: 'array', items: { type: 'string' }, maxItems: 100 },
    style: { enum: STYLES },
    status: { enum: STATUSES },
  },
};

const RESTORE_SCHEMA = { type: ['object', 'null'], additionalProperties: false, properties: { address: { type: 'string' } } };

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The key of an import body: exactly one of "armored" (text) and "base64" (any bytes, armored or binary). */
function importedBytes(body: ImportBody): string | Uint8Array {
  if ((body.armored === undefined) === (body.base64 === undefined)) {
    throw new AdminRefusal('invalid-request', 'give the key as exactly one of "armored" and "base64"');
  }
  if (body.armored !== undefined) return body.armored;
  const compact = body.base64!.replace(/\s+/g, '');
  if (!BASE64.test(compact)) throw new AdminRefusal('invalid-request', '"base64" is not base64');
  return Buffer.from(compact, 'base64');
}

/** The handler, with an AdminRefusal answered as its code and status instead of a 500. */
function answer<R extends FastifyRequest, T>(handler: (request: R) => Promise<T>): (request: R, reply: FastifyReply) => Promise<T> {
  return async (request) => {
    try {
      return await handler(request);
    } catch (error) {
      if (error instanceof AdminRefusal) throw new AdminHttpError(error.code, ADMIN_REFUSAL_STATUS[error.code], error.message);
      throw error;
    }
  };
}

function sendJsonError(reply: FastifyReply, error: HttpError): void {
  const code = error instanceof AdminHttpError ? error.code : codeForStatus(error.status);
  void reply
    .code(error.status)
    .headers(error.headers)
    .type('application/json; charset=utf-8')
    .send({ error: code, message: error.body || `HTTP ${error.status}` });
}

/** The stack's own refusals (schema, size, route) by status. */
function codeForStatus(status: number): AdminRefusalCode | 'internal' {
  if (status === 404) return 'not-found';
  if (status === 413) return 'too-large';
  if (status >= 500) return 'internal';
  return 'invalid-request';
}
