/** The box's endpoints (docs/incoming-box.md): each route, its credential check, and each answer. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { HttpError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { acceptJsonBodies, allowOnly, askForBody, type HttpApp } from '../http/stack.js';
import { hashToken, issueToken } from '../util/secret-token.js';
import { BlobTooLargeError, type BlobKey, type BlobStorage } from './storage.js';
import { isUserId, type BoxUserStore } from './users.js';
import { canonicalUserParam, credentialOf, ownerOnly, trustedOnly, type TrustedTokens } from './auth.js';
import { flagsOf, KNOWN_FLAGS, type BlobMetadata, type FlagChange, type ReservationHolder } from './metadata.js';
import {
  blobSchema, deliverySchema, fetchSchema, flagsSchema, isTrue, listQueryOf, listSchema, MAX_FLAGS_BYTES, parseRange, putSchema,
  type BlobParams, type FetchQueryString, type ListQueryString, type NamespaceQuery,
} from './requests.js';
import { incomingNamespace } from '../config/schema.js';
import { FRAMING_BYTES, incomingFraming, tagOf } from '../soledad/preamble.js';

export interface BoxContext {
  metadata: BlobMetadata;
  users: BoxUserStore;
  storage: BlobStorage;
  trusted: TrustedTokens;
  /** quota + tolerance in bytes; 0 = no quota. */
  quotaLimit: number;
  logger: Logger;
}

type BlobRequest<Extra = object> = FastifyRequest<{ Params: BlobParams; Querystring: NamespaceQuery } & Extra>;

const TEXT = 'text/plain; charset=utf-8';
const BLOB = '/blobs/:user/:id';
/** Soledad's Tag header is the base64url of a blob's last 16 bytes. */
const TAG_BYTES = 16;
/** On GET, when the stored bytes start with Soledad's framing (Lacre's own client strips it). */
const FRAMING_HEADER = 'X-Incoming-Framing';

export function addBoxRoutes(app: HttpApp, ctx: BoxContext): void {
  void app.register(async (incoming) => {
    incoming.addHook('onRequest', canonicalUserParam);
    incoming.addHook('onRequest', trustedOnly(ctx.trusted));
    incoming.put<{ Params: BlobParams; Querystring: NamespaceQuery }>(
      '/incoming/:user/:id',
      {
        schema: deliverySchema,
        // The shape of the user id is checked before the rest: a user that cannot exist is 404, like an unknown one.
        preValidation: (request, _reply, done) => done(isUserId(request.params.user) ? undefined : new HttpError(404)),
      },
      (request, reply) => receive(ctx, request, reply, 'delivery'),
    );
    allowOnly(incoming, '/incoming/:user/:id', ['PUT']);
  });
  void app.register(async (blobs) => {
    blobs.addHook('onRequest', canonicalUserParam);
    blobs.addHook('onRequest', ownerOnly(ctx.users));
    for (const url of ['/blobs/:user', '/blobs/:user/']) {
      blobs.get<{ Params: { user: string }; Querystring: ListQueryString }>(url, { schema: listSchema }, (request, reply) => list(ctx, request, reply));
      allowOnly(blobs, url, ['GET']);
    }
    blobs.get<{ Params: BlobParams; Querystring: FetchQueryString }>(BLOB, { schema: fetchSchema }, (request, reply) =>
      isTrue(request.query.only_flags) ? onlyFlags(ctx, request, reply) : fetchBlob(ctx, request, reply),
    );
    blobs.put<{ Params: BlobParams; Querystring: NamespaceQuery }>(BLOB, { schema: putSchema }, (request, reply) => receive(ctx, request, reply, 'upload'));
    blobs.delete<{ Params: BlobParams; Querystring: NamespaceQuery }>(BLOB, { schema: blobSchema }, (request, reply) => remove(ctx, request, reply));
    void blobs.register(async (flags) => {
      acceptJsonBodies(flags, MAX_FLAGS_BYTES, () => new HttpError(400, 'expected a JSON array of flags'));
      flags.post<{ Params: BlobParams; Querystring: NamespaceQuery; Body: string[] }>(BLOB, { schema: flagsSchema }, (request, reply) => setFlags(ctx, request, reply));
    });
    allowOnly(blobs, BLOB, ['GET', 'POST', 'DELETE', 'PUT'], { schema: blobSchema });
    blobs.post<{ Params: BlobParams; Querystring: NamespaceQuery }>(`${BLOB}/reserve`, { schema: blobSchema }, (request, reply) => reserve(ctx, request, reply));
    allowOnly(blobs, `${BLOB}/reserve`, ['POST'], { schema: blobSchema });
  });
}

function blobKey(request: BlobRequest): BlobKey {
  return { user: request.params.user, namespace: request.query.namespace, id: request.params.id };
}

function header(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function sendEmpty(reply: FastifyReply): FastifyReply {
  return reply.type(TEXT).send('');
}

/**
 * PUT /incoming/{user}/{id} (a delivery: the user must exist, the bytes are stored behind Soledad's framing, into
 * MX by default) and PUT /blobs/{user}/{id} (the user's own upload, stored as sent): stream, then record, answering
 * as Soledad.
 */
async function receive(ctx: BoxContext, request: BlobRequest, reply: FastifyReply, kind: 'delivery' | 'upload'): Promise<FastifyReply> {
  const delivery = kind === 'delivery';
  const key = delivery ? { ...blobKey(request), namespace: incomingNamespace(request.query.namespace) } : blobKey(request);
  const scheme = header(request, 'x-incoming-scheme') ?? 'raw';
  const started = Date.now();
  const before = await ctx.metadata.precheck(key);
  if (delivery && !before.known) throw new HttpError(404);
  if (before.exists) throw new HttpError(409, 'Blob already exists');
  const declared = Number(request.headers['content-length'] ?? NaN);
  const framingBytes = delivery ? FRAMING_BYTES : 0;
  const limit = ctx.quotaLimit;
  if (limit > 0 && Number.isFinite(declared) && before.usedBytes + framingBytes + declared > limit) throw new HttpError(507, 'Quota Exceeded!');
  askForBody(request, reply);
  const deliveredAt = new Date();
  let object;
  try {
    object = await ctx.storage.write(key, request.raw, {
      ...(limit > 0 ? { maxBytes: Math.max(0, limit - before.usedBytes) } : {}),
      ...(delivery ? { framing: (payloadSize: number) => incomingFraming(key.id, payloadSize, deliveredAt) } : {}),
      ...(Number.isFinite(declared) ? { expectedSize: declared } : {}),
    });
  } catch (error) {
    if (error instanceof BlobTooLargeError) throw new HttpError(507, 'Quota Exceeded!');
    throw error;
  }
  let outcome;
  try {
    outcome = await ctx.metadata.store(key, { ...object, framed: delivery }, scheme, limit);
  } catch (error) {
    await ctx.storage.remove(key, object.name).catch(() => undefined);
    throw error;
  }
  // A file no row names is an orphan the box's next start sweeps: failing to remove it must not turn 409/507 into 500.
  if (outcome !== 'stored') await ctx.storage.remove(key, object.name).catch(() => undefined);
  const status = outcome === 'stored' ? 200 : outcome === 'exists' ? 409 : 507;
  ctx.logger.info({ user: key.user, namespace: key.namespace, blob: key.id, size: object.size, status, ms: Date.now() - started }, 'blob received');
  if (outcome === 'exists') throw new HttpError(409, 'Blob already exists');
  if (outcome === 'quota') throw new HttpError(507, 'Quota Exceeded!');
  // The body Soledad's legacy delivery path answers; its MX only looks at the status.
  return delivery ? reply.send({ success: true }) : sendEmpty(reply);
}

async function list(ctx: BoxContext, request: FastifyRequest<{ Params: { user: string }; Querystring: ListQueryString }>, reply: FastifyReply): Promise<FastifyReply> {
  const { user } = request.params;
  const { namespace } = request.query;
  const query = listQueryOf(request.query);
  await ctx.metadata.expireReservations(user, namespace);
  if (isTrue(request.query.only_count)) return reply.send({ count: await ctx.metadata.count(user, namespace, query) });
  const details = isTrue(request.query.details);
  const blobs = await ctx.metadata.list(user, namespace, query, details);
  if (!details) return reply.send(blobs.map((blob) => blob.id));
  return reply.send(
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

async function fetchBlob(ctx: BoxContext, request: BlobRequest, reply: FastifyReply): Promise<FastifyReply> {
  const key = blobKey(request);
  const row = await ctx.metadata.get(key);
  if (!row) throw new HttpError(404);
  const range = parseRange(header(request, 'range'), row.size);
  if (range.kind === 'unsatisfiable') throw new HttpError(416, '', { 'Content-Range': `bytes */${row.size}` });
  // Deleted or purged since the metadata was read: 404. The tail first, so no stream is left open by a failure.
  const gone = (error: unknown): never => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new HttpError(404);
    throw error;
  };
  const tail = await ctx.storage.readTail(key, row.fileName, TAG_BYTES).catch(gone);
  const stream = await ctx.storage.read(key, row.fileName, range.kind === 'range' ? range.range : undefined).catch(gone);
  // The client went away mid-download: nothing to answer (fastify closes the file).
  stream.once('error', (error) => ctx.logger.debug({ err: error, user: key.user, blob: key.id }, 'download ended early'));
  reply.headers({ 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', 'X-Incoming-Scheme': row.scheme, Tag: tagOf(tail) });
  if (row.framed) reply.header(FRAMING_HEADER, 'soledad');
  if (range.kind === 'range') {
    const { start, end } = range.range;
    reply.code(206).headers({ 'Content-Length': String(end - start + 1), 'Content-Range': `bytes ${start}-${end}/${row.size}` });
  } else {
    reply.headers({ 'Content-Length': String(row.size) });
  }
  return reply.send(stream);
}

async function onlyFlags(ctx: BoxContext, request: BlobRequest, reply: FastifyReply): Promise<FastifyReply> {
  const flags = await ctx.metadata.flags(blobKey(request));
  if (!flags) throw new HttpError(404);
  return reply.send(flags);
}

async function reserve(ctx: BoxContext, request: BlobRequest, reply: FastifyReply): Promise<FastifyReply> {
  const reservation = issueToken();
  const outcome = await ctx.metadata.reserve(blobKey(request), reservation.hash);
  if (outcome === 'absent') throw new HttpError(404);
  if (outcome === 'busy') throw new HttpError(409, 'Blob is not PENDING');
  return reply.send({ reservation: reservation.token, expires_at: outcome.expiresAt.toISOString() });
}

/**
 * POST /blobs/{user}/{id} with a JSON array. ["PROCESSING"] reserves the blob for the credential that asks
 * (Soledad's client reserves so); the other changes need the reservation: X-Reservation when it came from
 * POST …/reserve, else the credential that reserved it.
 */
async function setFlags(ctx: BoxContext, request: BlobRequest<{ Body: string[] }>, reply: FastifyReply): Promise<FastifyReply> {
  const key = blobKey(request);
  const flags = request.body;
  const unknown = flags.find((flag) => !KNOWN_FLAGS.has(flag));
  if (unknown !== undefined) throw new HttpError(406, `invalid flag: ${unknown}`);
  const change = flagChange(flags, header(request, 'x-client-version'));
  const reservation = header(request, 'x-reservation');
  const outcome =
    change === 'reserve'
      ? await ctx.metadata.reserveFor(key, credentialOf(request))
      : await ctx.metadata.change(key, holderOf(request, reservation), change);
  if (outcome === 'absent') throw new HttpError(404);
  if (outcome === 'busy') throw new HttpError(409, 'Blob is not PENDING');
  if (outcome === 'stale') throw new HttpError(409, reservation === undefined ? 'the blob is not reserved by this credential' : 'reservation is not current');
  ctx.logger.info({ user: key.user, namespace: key.namespace, blob: key.id, flags }, 'blob flags changed');
  return sendEmpty(reply);
}

function holderOf(request: FastifyRequest, reservation: string | undefined): ReservationHolder {
  return reservation === undefined ? { credentialHash: credentialOf(request) } : { reservationHash: hashToken(reservation) };
}

/** What a flag list asks for; only the transitions of the state machine are allowed. */
function flagChange(flags: string[], version: string | undefined): FlagChange | 'reserve' {
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
      return 'reserve';
    default:
      throw new HttpError(400, `invalid flag combination: ${JSON.stringify(flags)}`);
  }
}

async function remove(ctx: BoxContext, request: BlobRequest, reply: FastifyReply): Promise<FastifyReply> {
  const key = blobKey(request);
  const name = await ctx.metadata.delete(key);
  if (name === undefined) throw new HttpError(404);
  await ctx.storage.remove(key, name);
  ctx.logger.info({ user: key.user, namespace: key.namespace, blob: key.id }, 'blob deleted');
  return sendEmpty(reply);
}
