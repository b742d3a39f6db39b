/** The box's endpoints (docs/incoming-box.md): routing, authentication, and each answer. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../log/logger.js';
import { BlobTooLargeError, type BlobKey, type BlobStorage } from './storage.js';
import { isUserId, type BoxUserStore } from './users.js';
import { parseAuthorization, type TrustedTokens } from './auth.js';
import { hashToken, issueToken } from '../util/secret-token.js';
import { flagsOf, type BlobMetadata, type FlagChange } from './metadata.js';
import {
  BLOB_ID, HttpError, SCHEMES, booleanParam, namespaceOf, parseListQuery, parseRange, readFlags, send, sendJson,
} from './requests.js';

export interface BoxContext {
  metadata: BlobMetadata;
  users: BoxUserStore;
  storage: BlobStorage;
  trusted: TrustedTokens;
  /** quota + tolerance in bytes; 0 = no quota. */
  quotaLimit: number;
  logger: Logger;
}

const UNAUTHORIZED = new HttpError(401, '', { 'WWW-Authenticate': 'Token' });
const MAX_VERSION_LENGTH = 128;

/** Handles one request; `expectsContinue` when the client waits for "100 Continue" before sending a body. */
export async function handleRequest(ctx: BoxContext, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
  try {
    await route(ctx, req, res, expectsContinue);
  } catch (error) {
    if (error instanceof HttpError) {
      if (!res.headersSent) send(res, error.status, error.body, error.headers);
      return;
    }
    if (req.destroyed && !req.complete) {
      ctx.logger.info({ method: req.method, path: pathOf(req), err: error }, 'request aborted by the client');
    } else {
      ctx.logger.error({ method: req.method, path: pathOf(req), err: error }, 'incoming box request failed');
    }
    if (!res.headersSent) send(res, 500, 'Internal Server Error');
    else res.destroy();
  }
}

function pathOf(req: IncomingMessage): string {
  return (req.url ?? '/').replace(/\?.*$/, '');
}

async function route(ctx: BoxContext, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://box');
  const [area, user, id, action, ...rest] = url.pathname.split('/').slice(1).map(decodeSegment);
  if (rest.length > 0 || user === undefined || user === '') throw new HttpError(404);
  if (area === 'incoming' && id !== undefined && action === undefined) {
    if (!ctx.trusted.accepts(parseAuthorization(req.headers.authorization) ?? { name: '', secret: '' })) throw UNAUTHORIZED;
    allow(req, 'PUT');
    if (!isUserId(user)) throw new HttpError(404);
    return receive(ctx, req, res, blobKey(user, id, url.searchParams), expectsContinue, true);
  }
  if (area !== 'blobs') throw new HttpError(404);
  await authenticateUser(ctx, req, user);
  if ((id === undefined || id === '') && action === undefined) {
    allow(req, 'GET');
    return list(ctx, res, user, url.searchParams);
  }
  if (id === undefined || id === '') throw new HttpError(404);
  const key = blobKey(user, id, url.searchParams);
  if (action === 'reserve') {
    allow(req, 'POST');
    return reserve(ctx, res, key);
  }
  if (action !== undefined) throw new HttpError(404);
  switch (allow(req, 'GET', 'POST', 'DELETE', 'PUT')) {
    case 'GET':
      return booleanParam(url.searchParams, 'only_flags') ? onlyFlags(ctx, res, key) : fetchBlob(ctx, req, res, key);
    case 'POST':
      return setFlags(ctx, req, res, key, expectsContinue);
    case 'DELETE':
      return remove(ctx, res, key);
    default:
      return receive(ctx, req, res, key, expectsContinue, false);
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'invalid path');
  }
}

function allow(req: IncomingMessage, ...methods: string[]): string {
  const method = req.method ?? '';
  if (!methods.includes(method)) throw new HttpError(405, '', { Allow: methods.join(', ') });
  return method;
}

/** Only the user's own token opens /blobs/{user}/…; anything else is 401, whether or not the box exists. */
async function authenticateUser(ctx: BoxContext, req: IncomingMessage, user: string): Promise<void> {
  const credential = parseAuthorization(req.headers.authorization);
  if (!credential || credential.name !== user || !(await ctx.users.verifyToken(user, credential.secret))) throw UNAUTHORIZED;
}

function blobKey(user: string, id: string, params: URLSearchParams): BlobKey {
  if (!BLOB_ID.test(id)) throw new HttpError(400, 'invalid blob id');
  return { user, namespace: namespaceOf(params), id };
}

/** PUT /incoming/{user}/{id} (`checkUser`) and PUT /blobs/{user}/{id}: stream, then record, answering as Soledad. */
async function receive(ctx: BoxContext, req: IncomingMessage, res: ServerResponse, key: BlobKey, expectsContinue: boolean, checkUser: boolean): Promise<void> {
  const scheme = headerValue(req, 'x-incoming-scheme') ?? 'raw';
  if (!SCHEMES.has(scheme)) throw new HttpError(400, `invalid X-Incoming-Scheme: ${scheme}`);
  const started = Date.now();
  const before = await ctx.metadata.precheck(key);
  if (checkUser && !before.known) throw new HttpError(404);
  if (before.exists) throw new HttpError(409, 'Blob already exists');
  const declared = Number(req.headers['content-length'] ?? NaN);
  const limit = ctx.quotaLimit;
  if (limit > 0 && Number.isFinite(declared) && before.usedBytes + declared > limit) throw new HttpError(507, 'Quota Exceeded!');
  if (expectsContinue) res.writeContinue();
  let object;
  try {
    object = await ctx.storage.write(key, req, limit > 0 ? { maxBytes: Math.max(0, limit - before.usedBytes) } : {});
  } catch (error) {
    if (error instanceof BlobTooLargeError) throw new HttpError(507, 'Quota Exceeded!');
    throw error;
  }
  let outcome;
  try {
    outcome = await ctx.metadata.store(key, object, scheme, limit);
  } catch (error) {
    await ctx.storage.remove(key, object.name).catch(() => undefined);
    throw error;
  }
  if (outcome !== 'stored') await ctx.storage.remove(key, object.name);
  const status = outcome === 'stored' ? 200 : outcome === 'exists' ? 409 : 507;
  ctx.logger.info({ user: key.user, namespace: key.namespace, blob: key.id, size: object.size, status, ms: Date.now() - started }, 'blob received');
  if (outcome === 'exists') throw new HttpError(409, 'Blob already exists');
  if (outcome === 'quota') throw new HttpError(507, 'Quota Exceeded!');
  send(res, 200);
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function list(ctx: BoxContext, res: ServerResponse, user: string, params: URLSearchParams): Promise<void> {
  const namespace = namespaceOf(params);
  const query = parseListQuery(params);
  const onlyCount = booleanParam(params, 'only_count');
  const details = booleanParam(params, 'details');
  await ctx.metadata.expireReservations(user, namespace);
  if (onlyCount) return sendJson(res, { count: await ctx.metadata.count(user, namespace, query) });
  const blobs = await ctx.metadata.list(user, namespace, query, details);
  if (!details) return sendJson(res, blobs.map((blob) => blob.id));
  sendJson(
    res,
    blobs.map((blob) => ({
      id: blob.id,
      size: blob.size,
      created_at: blob.createdAt.toISOString(),
      state: blob.state,
      flags: flagsOf(blob.state, blob.permanent),
      scheme: blob.scheme,
    })),
  );
}

async function fetchBlob(ctx: BoxContext, req: IncomingMessage, res: ServerResponse, key: BlobKey): Promise<void> {
  const row = await ctx.metadata.get(key);
  if (!row) throw new HttpError(404);
  const range = parseRange(headerValue(req, 'range'), row.size);
  if (range.kind === 'unsatisfiable') throw new HttpError(416, '', { 'Content-Range': `bytes */${row.size}` });
  const stream = await ctx.storage.read(key, row.fileName, range.kind === 'range' ? range.range : undefined).catch((error: unknown) => {
    // Deleted or purged between the metadata read and the open.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new HttpError(404);
    throw error;
  });
  const headers: Record<string, string> = {
    'Content-Type': 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    'X-Incoming-Scheme': row.scheme,
  };
  if (range.kind === 'range') {
    const { start, end } = range.range;
    res.writeHead(206, { ...headers, 'Content-Length': String(end - start + 1), 'Content-Range': `bytes ${start}-${end}/${row.size}` });
  } else {
    res.writeHead(200, { ...headers, 'Content-Length': String(row.size) });
  }
  try {
    await pipeline(stream, res);
  } catch (error) {
    // The client went away mid-download: nothing to answer.
    ctx.logger.debug({ err: error, user: key.user, blob: key.id }, 'download ended early');
  }
}

async function onlyFlags(ctx: BoxContext, res: ServerResponse, key: BlobKey): Promise<void> {
  const flags = await ctx.metadata.flags(key);
  if (!flags) throw new HttpError(404);
  sendJson(res, flags);
}

async function reserve(ctx: BoxContext, res: ServerResponse, key: BlobKey): Promise<void> {
  const reservation = issueToken();
  const outcome = await ctx.metadata.reserve(key, reservation.hash);
  if (outcome === 'absent') throw new HttpError(404);
  if (outcome === 'busy') throw new HttpError(409, 'Blob is not PENDING');
  sendJson(res, { reservation: reservation.token, expires_at: outcome.expiresAt.toISOString() });
}

async function setFlags(ctx: BoxContext, req: IncomingMessage, res: ServerResponse, key: BlobKey, expectsContinue: boolean): Promise<void> {
  // With a 'checkContinue' listener installed, Node leaves "100 Continue" to us.
  if (expectsContinue) res.writeContinue();
  const flags = await readFlags(req);
  const change = flagChange(flags, headerValue(req, 'x-client-version'));
  const reservation = headerValue(req, 'x-reservation') ?? '';
  const outcome = await ctx.metadata.change(key, hashToken(reservation), change);
  if (outcome === 'absent') throw new HttpError(404);
  if (outcome === 'stale') throw new HttpError(409, reservation ? 'reservation is not current' : 'X-Reservation is required');
  ctx.logger.info({ user: key.user, namespace: key.namespace, blob: key.id, flags }, 'blob flags changed');
  send(res, 200);
}

/** What a flag list asks for; only the transitions of the state machine are allowed. */
function flagChange(flags: string[], version: string | undefined): FlagChange {
  if (version !== undefined && (version.length > MAX_VERSION_LENGTH || !/^[\x20-\x7e]*$/.test(version))) {
    throw new HttpError(400, 'invalid X-Client-Version');
  }
  const wanted = [...new Set(flags)].sort().join(',');
  switch (wanted) {
    case 'PROCESSED':
      return { state: 'PROCESSED' };
    case 'PENDING':
      return { state: 'PENDING' };
    case 'FAILED':
    case 'FAILED,PERMANENT':
      return { state: 'FAILED', permanent: wanted !== 'FAILED', version: version ?? null };
    case 'PROCESSING':
      throw new HttpError(409, 'reserve with POST /blobs/{user}/{id}/reserve');
    default:
      throw new HttpError(400, `invalid flag combination: ${JSON.stringify(flags)}`);
  }
}

async function remove(ctx: BoxContext, res: ServerResponse, key: BlobKey): Promise<void> {
  const name = await ctx.metadata.delete(key);
  if (name === undefined) throw new HttpError(404);
  await ctx.storage.remove(key, name);
  ctx.logger.info({ user: key.user, namespace: key.namespace, blob: key.id }, 'blob deleted');
  send(res, 200);
}
