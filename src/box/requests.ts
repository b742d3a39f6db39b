/**
 * What the box's requests may carry (route schemas: fastify refuses anything else with 400 before a handler
 * runs) and what they mean (the listing query, a Range). No policy here.
 */
import { HttpError } from '../errors.js';
import { INCOMING_NAMESPACE } from '../config/schema.js';
import { KNOWN_FLAGS, type BlobState, type ListQuery } from './metadata.js';
import type { ByteRange } from './storage.js';

export const NAMESPACE = /^[A-Za-z0-9_-]{1,64}$/;
/** Not starting with a dot: stored files are named after the id, and dot names are the storage's own (.tmp). */
export const BLOB_ID = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;
export const SCHEMES = ['openpgp', 'openpgp-mime', 'openpgp-inline', 'raw'] as const;
/** A /blobs request that names no namespace means Soledad's `default`; a delivery, Soledad's `MX`. */
export const DEFAULT_NAMESPACE = 'default';
export const MAX_FLAGS_BYTES = 4096;

/** 1/true/yes and 0/false/no (any case), as Soledad-style clients send them; empty is false. */
const BOOLEAN = { type: 'string', pattern: '^(|[01]|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Ff][Aa][Ll][Ss][Ee]|[Nn][Oo])$' } as const;
const POSITIVE = { type: 'string', pattern: '^(?!0+$)[0-9]{1,15}$' } as const;
const NATURAL = { type: 'string', pattern: '^[0-9]{1,15}$' } as const;
const NAMESPACE_PARAM = { type: 'string', pattern: NAMESPACE.source, default: DEFAULT_NAMESPACE } as const;
const INCOMING_NAMESPACE_PARAM = { ...NAMESPACE_PARAM, default: INCOMING_NAMESPACE } as const;

export interface BlobParams {
  user: string;
  id: string;
}

export interface NamespaceQuery {
  namespace: string;
}

export interface ListQueryString extends NamespaceQuery {
  only_count?: string;
  details?: string;
  include_processing?: string;
  filter_flag?: string;
  /** A "+" in a query string decodes to a space: "order_by=+date" arrives as " date". */
  order_by?: string;
  limit?: string;
  page?: string;
  size_limit?: string;
}

export interface FetchQueryString extends NamespaceQuery {
  only_flags?: string;
}

const blobParams = { type: 'object', properties: { id: { type: 'string', pattern: BLOB_ID.source } } } as const;
const namespaceQuery = { type: 'object', properties: { namespace: NAMESPACE_PARAM } } as const;

const schemeHeader = { type: 'object', properties: { 'x-incoming-scheme': { enum: SCHEMES } } } as const;

/** PUT /blobs/{user}/{id}: the scheme travels in a header (absent: raw). */
export const putSchema = { params: blobParams, querystring: namespaceQuery, headers: schemeHeader } as const;

/** PUT /incoming/{user}/{id}: as putSchema, into MX unless told otherwise. */
export const deliverySchema = {
  params: blobParams,
  querystring: { type: 'object', properties: { namespace: INCOMING_NAMESPACE_PARAM } },
  headers: schemeHeader,
} as const;

export const blobSchema = { params: blobParams, querystring: namespaceQuery } as const;

export const fetchSchema = {
  params: blobParams,
  querystring: { type: 'object', properties: { namespace: NAMESPACE_PARAM, only_flags: BOOLEAN } },
} as const;

/** A JSON array of strings (each a known flag, checked by the handler: 406 otherwise, as Soledad). */
export const flagsSchema = {
  params: blobParams,
  querystring: namespaceQuery,
  body: { type: 'array', items: { type: 'string' } },
  headers: { type: 'object', properties: { 'x-client-version': { type: 'string', pattern: '^[\\x20-\\x7e]{0,128}$' } } },
} as const;

export const listSchema = {
  querystring: {
    type: 'object',
    properties: {
      namespace: NAMESPACE_PARAM,
      only_count: BOOLEAN,
      details: BOOLEAN,
      include_processing: BOOLEAN,
      filter_flag: { enum: [...KNOWN_FLAGS] },
      order_by: { type: 'string', pattern: '^[ +-]?date$' },
      limit: POSITIVE,
      page: POSITIVE,
      size_limit: NATURAL,
    },
  },
} as const;

export function isTrue(flag: string | undefined): boolean {
  return flag !== undefined && /^(1|true|yes)$/i.test(flag);
}

/**
 * The listing qualifiers of docs/incoming-box.md, as listSchema lets them through. Without filter_flag every
 * blob of the namespace is listed (Soledad); include_processing adds PROCESSING ones to PENDING ones (alone, it
 * means filter_flag=PENDING with them).
 */
export function listQueryOf(query: ListQueryString): ListQuery {
  const filterFlag = query.filter_flag;
  const withProcessing = isTrue(query.include_processing) && (filterFlag === undefined || filterFlag === 'PENDING');
  let states: BlobState[] | undefined;
  if (withProcessing) states = ['PENDING', 'PROCESSING'];
  else if (filterFlag === 'PERMANENT') states = ['FAILED'];
  else if (filterFlag !== undefined) states = [filterFlag as BlobState];
  if (query.page !== undefined && query.limit === undefined) throw new HttpError(400, 'page needs limit');
  const limit = query.limit === undefined ? undefined : Number(query.limit);
  return {
    ...(states === undefined ? {} : { states }),
    permanentOnly: filterFlag === 'PERMANENT',
    newestFirst: query.order_by === '-date',
    ...(limit === undefined ? {} : { limit }),
    offset: limit === undefined ? 0 : (Number(query.page ?? 1) - 1) * limit,
    ...(query.size_limit === undefined ? {} : { sizeLimit: Number(query.size_limit) }),
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
