/**
 * The consumer side of the Incoming Box (docs/incoming-box.md, "The user's blobs API"): a user lists, reserves,
 * downloads and flags the blobs of their own box with their user token.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { LacreError } from '../errors.js';
import { INCOMING_NAMESPACE } from '../config/schema.js';
import type { Preamble } from '../soledad/preamble.js';
import { stripFraming } from './framing.js';

export interface IncomingBoxClientOptions {
  /** Base URL of the box, e.g. http://127.0.0.1:9025 (a trailing slash is ignored). */
  url: string;
  /** The user's UUID. */
  user: string;
  /** The user token printed by `lacre inbox token create`. */
  token: string;
  /** Default MX, where deliveries land. */
  namespace?: string;
  /** Bound on each request: until the full answer for small requests, between body chunks for downloads. */
  timeoutMs?: number;
}

export type BlobState = 'PENDING' | 'PROCESSING' | 'PROCESSED' | 'FAILED';
export type OrderBy = 'date' | '+date' | '-date';

export interface ListFilters {
  /** Only blobs whose state/flags include this flag (default PENDING: the client always names one). */
  filterFlag?: string;
  /** With filterFlag PENDING: PENDING and PROCESSING blobs. */
  includeProcessing?: boolean;
  /** Skip blobs bigger than this many bytes. */
  sizeLimit?: number;
}

export interface ListOptions extends ListFilters {
  limit?: number;
  /** 1-based; needs `limit`. */
  page?: number;
  orderBy?: OrderBy;
  /** Metadata-first shape instead of plain ids. */
  details?: boolean;
}

export interface BlobDetails {
  id: string;
  size: number;
  createdAt: Date;
  state: string;
  flags: string[];
  scheme: string;
}

export type ReserveResult =
  | { reserved: true; reservation: string; expiresAt: Date }
  /** Another client holds it (409), or it is gone (404): either way, not ours to process. */
  | { reserved: false; reason: 'already-reserved' | 'not-found' };

export interface ByteRange {
  start: number;
  /** Inclusive; omitted = to the end. */
  end?: number;
}

export interface FetchedBlob {
  /**
   * The bytes, streamed; the caller must consume or destroy it. A whole blob stored behind Soledad's framing
   * comes without it: the payload as it was delivered.
   */
  stream: Readable;
  /** Bytes in `stream`. */
  size: number;
  /** The Soledad preamble read off the front of a framed blob (whole fetches only). */
  preamble?: Preamble;
  /** X-Incoming-Scheme: `openpgp`, `openpgp-mime`, `openpgp-inline`, `raw`, … (`raw` when absent). */
  scheme: string;
  /** Present for a 206 answer: the range served and the blob's total size. */
  range?: { start: number; end: number; total: number };
}

export type FetchAndReserveResult = Exclude<ReserveResult, { reserved: true }> | ({ reserved: true; reservation: string; expiresAt: Date } & FetchedBlob);

/** The box answered with a status this request does not expect. */
export class IncomingBoxHttpError extends LacreError {
  constructor(
    message: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(message);
  }
}

/** The reservation is no longer the current one (409 on a flag change): the blob may be another client's now. */
export class ReservationLostError extends IncomingBoxHttpError {}

/** The box could not be reached or did not answer in time (nothing is known about the request's effect). */
export class IncomingBoxUnreachableError extends LacreError {}

const DEFAULT_TIMEOUT_MS = 30_000;

export class IncomingBoxClient {
  readonly namespace: string;
  private readonly baseUrl: string;
  private readonly authorization: string;
  private readonly timeoutMs: number;

  constructor(private readonly options: IncomingBoxClientOptions) {
    this.baseUrl = options.url.replace(/\/+$/, '');
    this.namespace = options.namespace ?? INCOMING_NAMESPACE;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.authorization = `Token ${Buffer.from(`${options.user}:${options.token}`).toString('base64')}`;
  }

  /** Number of blobs matching the filters (PENDING ones by default). */
  async count(filters: ListFilters = {}): Promise<number> {
    const answer = await this.exchange('GET', this.boxUrl('', { ...listQuery(filters), only_count: '1' }));
    const body = expectJson(answer, 200);
    const count = (body as { count?: unknown } | null)?.count;
    if (typeof count !== 'number') throw unexpectedShape(answer);
    return count;
  }

  list(options?: ListOptions & { details?: false }): Promise<string[]>;
  list(options: ListOptions & { details: true }): Promise<BlobDetails[]>;
  async list(options: ListOptions = {}): Promise<string[] | BlobDetails[]> {
    const query = { ...listQuery(options), limit: options.limit, page: options.page, order_by: options.orderBy, details: options.details ? '1' : undefined };
    const answer = await this.exchange('GET', this.boxUrl('', query));
    const body = expectJson(answer, 200);
    if (!Array.isArray(body)) throw unexpectedShape(answer);
    if (!options.details) {
      if (!body.every((id) => typeof id === 'string')) throw unexpectedShape(answer);
      return body as string[];
    }
    return body.map((entry) => parseDetails(answer, entry));
  }

  /** Flags of one blob, its state first. */
  async flags(id: string): Promise<string[]> {
    const answer = await this.exchange('GET', this.boxUrl(encodeURIComponent(id), { only_flags: '1' }));
    const body = expectJson(answer, 200);
    if (!Array.isArray(body) || !body.every((flag) => typeof flag === 'string')) throw unexpectedShape(answer);
    return body as string[];
  }

  /** Moves a PENDING (or expired PROCESSING) blob to PROCESSING for this client. */
  async reserve(id: string): Promise<ReserveResult> {
    const answer = await this.exchange('POST', this.boxUrl(`${encodeURIComponent(id)}/reserve`));
    if (answer.status === 409) return { reserved: false, reason: 'already-reserved' };
    if (answer.status === 404) return { reserved: false, reason: 'not-found' };
    const body = expectJson(answer, 200) as { reservation?: unknown; expires_at?: unknown } | null;
    if (typeof body?.reservation !== 'string' || typeof body.expires_at !== 'string') throw unexpectedShape(answer);
    return { reserved: true, reservation: body.reservation, expiresAt: new Date(body.expires_at) };
  }

  /**
   * Streams a blob: its payload (Soledad's framing, when the box says it stored one, read off and returned as
   * `preamble`), or a byte range of the bytes as stored, framing included.
   */
  async fetch(id: string, options: { range?: ByteRange } = {}): Promise<FetchedBlob> {
    const headers: Record<string, string> = {};
    if (options.range) headers.range = `bytes=${options.range.start}-${options.range.end ?? ''}`;
    const { response, controller } = await this.open('GET', this.boxUrl(encodeURIComponent(id)), { headers });
    if (response.status !== 200 && response.status !== 206) {
      const text = await response.text().catch(() => '');
      throw statusError({ status: response.status, url: response.url, headers: response.headers, text });
    }
    const blob: FetchedBlob = {
      stream: guardedBody(response, controller, this.timeoutMs),
      size: Number(response.headers.get('content-length') ?? NaN),
      scheme: response.headers.get('x-incoming-scheme') ?? 'raw',
    };
    if (response.status === 206) {
      blob.range = parseContentRange(response.headers.get('content-range'));
      return blob;
    }
    // Absent from an older box, and for blobs stored before framing (or uploaded by a user): the bytes are bare.
    if (response.headers.get('x-incoming-framing') !== 'soledad') return blob;
    const { stream, preamble, framingBytes } = await stripFraming(blob.stream);
    return { ...blob, stream, preamble, size: blob.size - framingBytes };
  }

  /** Reserve, then download: the blob is this client's while it processes the stream. */
  async fetchAndReserve(id: string): Promise<FetchAndReserveResult> {
    const reservation = await this.reserve(id);
    if (!reservation.reserved) return reservation;
    try {
      return { ...reservation, ...(await this.fetch(id)) };
    } catch (error) {
      if (error instanceof IncomingBoxHttpError && error.status === 404) return { reserved: false, reason: 'not-found' };
      await this.release(id, reservation.reservation).catch(() => undefined);
      throw error;
    }
  }

  async markProcessed(id: string, reservation: string): Promise<void> {
    await this.setFlags(id, ['PROCESSED'], { 'x-reservation': reservation });
  }

  /** FAILED (temporary: a later client version may succeed) or FAILED + PERMANENT, recording the client version. */
  async markFailed(id: string, reservation: string, options: { version: string; permanent?: boolean }): Promise<void> {
    const flags = options.permanent ? ['FAILED', 'PERMANENT'] : ['FAILED'];
    await this.setFlags(id, flags, { 'x-reservation': reservation, 'x-client-version': options.version });
  }

  /** Gives the reservation back: the blob is PENDING again. */
  async release(id: string, reservation: string): Promise<void> {
    await this.setFlags(id, ['PENDING'], { 'x-reservation': reservation });
  }

  /** True when deleted, false when there was no such blob. */
  async delete(id: string): Promise<boolean> {
    const answer = await this.exchange('DELETE', this.boxUrl(encodeURIComponent(id)));
    if (answer.status === 404) return false;
    expectStatus(answer, 200, 204);
    return true;
  }

  /** Stores the user's own blob: true when stored, false when that id already exists (409). */
  async upload(id: string, body: Buffer | Readable, options: { scheme?: string } = {}): Promise<boolean> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (options.scheme) headers['x-incoming-scheme'] = options.scheme;
    const payload = Buffer.isBuffer(body) ? body : (Readable.toWeb(body) as unknown as ReadableStream<Uint8Array>);
    const answer = await this.exchange('PUT', this.boxUrl(encodeURIComponent(id)), { headers, body: payload });
    if (answer.status === 409) return false;
    expectStatus(answer, 200, 201, 204);
    return true;
  }

  private async setFlags(id: string, flags: string[], headers: Record<string, string>): Promise<void> {
    const answer = await this.exchange('POST', this.boxUrl(encodeURIComponent(id)), {
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify(flags),
    });
    if (answer.status === 409) {
      throw new ReservationLostError(`blob ${id}: the reservation is not current (409)${describe(answer.text)}`, 409, answer.text);
    }
    expectStatus(answer, 200, 204);
  }

  private boxUrl(path: string, query: Record<string, string | number | undefined> = {}): string {
    const url = new URL(`${this.baseUrl}/blobs/${encodeURIComponent(this.options.user)}/${path}`);
    url.searchParams.set('namespace', this.namespace);
    for (const [name, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(name, String(value));
    return url.toString();
  }

  /** One small exchange, its answer read in full; the timeout covers all of it. */
  private async exchange(method: string, url: string, init: RequestInitLite = {}): Promise<Answer> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    try {
      const response = await this.send(method, url, init, controller);
      try {
        return { status: response.status, url: response.url, headers: response.headers, text: await response.text() };
      } catch (error) {
        throw new IncomingBoxUnreachableError(`${method} ${redact(url)}: answer cut off: ${reason(error, controller)}`, { cause: error });
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** A download: the timeout covers the answer's head, then each wait for the next chunk of the body. */
  private async open(method: string, url: string, init: RequestInitLite): Promise<{ response: Response; controller: AbortController }> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    try {
      return { response: await this.send(method, url, init, controller), controller };
    } finally {
      clearTimeout(timer);
    }
  }

  private async send(method: string, url: string, init: RequestInitLite, controller: AbortController): Promise<Response> {
    const streamingBody = init.body !== undefined && typeof init.body !== 'string' && !Buffer.isBuffer(init.body);
    try {
      return await fetch(url, {
        method,
        headers: { authorization: this.authorization, ...init.headers },
        body: init.body,
        signal: controller.signal,
        ...(streamingBody ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (error) {
      throw new IncomingBoxUnreachableError(`${method} ${redact(url)}: ${reason(error, controller)}`, { cause: error });
    }
  }
}

interface RequestInitLite {
  headers?: Record<string, string>;
  body?: string | Buffer | ReadableStream<Uint8Array>;
}

/** A fully read answer. */
interface Answer {
  status: number;
  url: string;
  headers: Headers;
  text: string;
}

/** Without filter_flag the box lists every state (as Soledad does): this client always names the flag. */
function listQuery(filters: ListFilters): Record<string, string | number | undefined> {
  return {
    filter_flag: filters.filterFlag ?? 'PENDING',
    include_processing: filters.includeProcessing ? '1' : undefined,
    size_limit: filters.sizeLimit,
  };
}

function parseDetails(answer: Answer, entry: unknown): BlobDetails {
  const e = (entry ?? {}) as Record<string, unknown>;
  const flags = e.flags;
  if (
    typeof e.id !== 'string' ||
    typeof e.size !== 'number' ||
    typeof e.created_at !== 'string' ||
    typeof e.state !== 'string' ||
    !Array.isArray(flags) ||
    !flags.every((flag) => typeof flag === 'string')
  ) {
    throw unexpectedShape(answer);
  }
  const scheme = typeof e.scheme === 'string' ? e.scheme : 'raw';
  return { id: e.id, size: e.size, createdAt: new Date(e.created_at), state: e.state, flags: flags as string[], scheme };
}

function parseContentRange(header: string | null): FetchedBlob['range'] {
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header ?? '');
  if (!match) return undefined;
  return { start: Number(match[1]), end: Number(match[2]), total: Number(match[3]) };
}

function expectStatus(answer: Answer, ...statuses: number[]): void {
  if (!statuses.includes(answer.status)) throw statusError(answer);
}

function expectJson(answer: Answer, status: number): unknown {
  expectStatus(answer, status);
  try {
    return JSON.parse(answer.text) as unknown;
  } catch {
    throw new IncomingBoxHttpError(`${redact(answer.url)}: answer is not JSON`, answer.status, answer.text);
  }
}

function statusError(answer: Answer): IncomingBoxHttpError {
  return new IncomingBoxHttpError(`${redact(answer.url)}: HTTP ${answer.status}${describe(answer.text)}`, answer.status, answer.text);
}

function unexpectedShape(answer: Answer): IncomingBoxHttpError {
  return new IncomingBoxHttpError(`${redact(answer.url)}: unexpected answer ${answer.text.slice(0, 200)}`, answer.status, answer.text);
}

function describe(text: string): string {
  const trimmed = text.trim();
  return trimmed ? `: ${trimmed.slice(0, 200)}` : '';
}

/** The URL without its query string (the namespace and filters add nothing to an error message). */
function redact(url: string): string {
  return url.replace(/\?.*$/, '');
}

function reason(error: unknown, controller?: AbortController): string {
  if (controller?.signal.aborted && controller.signal.reason instanceof Error) return controller.signal.reason.message;
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}

/**
 * The download as a node stream. The timeout runs only while waiting for the network (from a read request to
 * the chunk), never while the consumer applies backpressure, so a slow consumer is not mistaken for a dead box.
 */
function guardedBody(response: Response, controller: AbortController, timeoutMs: number): Readable {
  if (!response.body) return Readable.from([]);
  const reader = (response.body as unknown as WebReadableStream<Uint8Array>).getReader();
  let timer: NodeJS.Timeout | undefined;
  let finished = false;
  return new Readable({
    read() {
      timer = setTimeout(() => controller.abort(new Error(`download stalled: no data for ${timeoutMs} ms`)), timeoutMs);
      reader.read().then(
        ({ done, value }) => {
          clearTimeout(timer);
          finished = done;
          this.push(done ? null : Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        },
        (error: unknown) => {
          clearTimeout(timer);
          this.destroy(new IncomingBoxUnreachableError(`${redact(response.url)}: download failed: ${reason(error, controller)}`, { cause: error }));
        },
      );
    },
    destroy(error, callback) {
      clearTimeout(timer);
      // Stop the transfer (and free the connection) when the consumer gives up early.
      if (finished) return callback(error);
      if (!controller.signal.aborted) controller.abort(error ?? new Error('download closed by the consumer'));
      reader.cancel().catch(() => undefined);
      callback(error);
    },
  });
}
