/** Reading requests and writing answers: query qualifiers, Range, small JSON bodies. No policy here. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { KNOWN_FLAGS, type BlobState, type ListQuery } from './metadata.js';
import type { ByteRange } from './storage.js';

export const NAMESPACE = /^[A-Za-z0-9_-]{1,64}$/;
/** Not starting with a dot: stored files are named after the id, and dot names are the storage's own (.tmp). */
export const BLOB_ID = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;
export const SCHEMES: ReadonlySet<string> = new Set(['openpgp', 'openpgp-mime', 'openpgp-inline', 'raw']);
export const DEFAULT_NAMESPACE = 'mx';

/** A request the box refuses with a status and a short text body. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body = '',
    readonly headers: Record<string, string> = {},
  ) {
    super(`${status} ${body}`);
  }
}

export function send(res: ServerResponse, status: number, body = '', headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(body, 'utf8');
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(bytes.length), ...headers });
  res.end(bytes);
}

export function sendJson(res: ServerResponse, value: unknown): void {
  send(res, 200, JSON.stringify(value), { 'Content-Type': 'application/json' });
}

export function namespaceOf(params: URLSearchParams): string {
  const namespace = params.get('namespace') ?? DEFAULT_NAMESPACE;
  if (!NAMESPACE.test(namespace)) throw new HttpError(400, 'invalid namespace');
  return namespace;
}

/** 1/true/yes and 0/false/no (any case), as Soledad-style clients send them; anything else is a 400. */
export function booleanParam(params: URLSearchParams, name: string): boolean {
  const value = params.get(name);
  if (value === null || value === '') return false;
  const flag = ({ '1': true, true: true, yes: true, '0': false, false: false, no: false } as Record<string, boolean>)[value.toLowerCase()];
  if (flag === undefined) throw new HttpError(400, `invalid ${name}: ${value}`);
  return flag;
}

function integerParam(params: URLSearchParams, name: string, min: number): number | undefined {
  const value = params.get(name);
  if (value === null) return undefined;
  if (!/^\d{1,15}$/.test(value) || Number(value) < min) throw new HttpError(400, `invalid ${name}: ${value}`);
  return Number(value);
}

/** The listing qualifiers of docs/incoming-box.md. */
export function parseListQuery(params: URLSearchParams): ListQuery {
  const filterFlag = params.get('filter_flag');
  if (filterFlag !== null && !KNOWN_FLAGS.has(filterFlag)) throw new HttpError(400, `invalid filter_flag: ${filterFlag}`);
  const includeProcessing = booleanParam(params, 'include_processing');
  let states: BlobState[];
  if (filterFlag === 'PERMANENT') states = ['FAILED'];
  else if (filterFlag !== null) states = [filterFlag as BlobState];
  else states = includeProcessing ? ['PENDING', 'PROCESSING'] : ['PENDING'];
  // A "+" in a query string decodes to a space: "order_by=+date" arrives as " date".
  const orderBy = (params.get('order_by') ?? 'date').replace(/^ /, '+');
  if (!['date', '+date', '-date'].includes(orderBy)) throw new HttpError(400, `invalid order_by: ${params.get('order_by')}`);
  const limit = integerParam(params, 'limit', 1);
  const page = integerParam(params, 'page', 1);
  if (page !== undefined && limit === undefined) throw new HttpError(400, 'page needs limit');
  const sizeLimit = integerParam(params, 'size_limit', 0);
  return {
    states,
    permanentOnly: filterFlag === 'PERMANENT',
    newestFirst: orderBy === '-date',
    ...(limit === undefined ? {} : { limit }),
    offset: limit === undefined ? 0 : ((page ?? 1) - 1) * limit,
    ...(sizeLimit === undefined ? {} : { sizeLimit }),
  };
}

export type RangeRequest = { kind: 'all' } | { kind: 'range'; range: ByteRange } | { kind: 'unsatisfiable' };

/**
 * A single `bytes=` range (a-b, a-, -n). Several ranges or an unparsable header are ignored (RFC 9110
 * allows it): the whole blob is sent.
 */
export function parseRange(header: string | undefined, size: number): RangeRequest {
  if (header === undefined) return { kind: 'all' };
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return { kind: 'all' };
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (match[2] !== '' && Number(match[2]) < start) return { kind: 'all' };
  }
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'range', range: { start, end } };
}

/** The JSON flag list of a flags POST: an array of strings, each a known flag (else 406, as Soledad). */
export async function readFlags(req: IncomingMessage, maxBytes = 4096): Promise<string[]> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= maxBytes) chunks.push(chunk);
  }
  if (size > maxBytes) throw new HttpError(413, 'flag list too long');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'expected a JSON array of flags');
  }
  if (!Array.isArray(value) || !value.every((flag) => typeof flag === 'string')) throw new HttpError(400, 'expected a JSON array of flags');
  const unknown = value.find((flag) => !KNOWN_FLAGS.has(flag));
  if (unknown !== undefined) throw new HttpError(406, `invalid flag: ${unknown}`);
  return value as string[];
}
