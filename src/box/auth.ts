/**
 * `Authorization: Token base64("name:secret")`, as Soledad reads it: decode, split at the first colon.
 * The Trusted Application's name is a service (incoming_box.trusted_tokens); a user's is their UUID.
 * Each area of the box checks its credential in an onRequest hook, before routing goes any further.
 */
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { HttpError } from '../errors.js';
import { hashToken, tokenMatches } from '../util/secret-token.js';
import { canonicalUserId, type BoxUserStore } from './users.js';

export interface Credential {
  name: string;
  secret: string;
}

const UNAUTHORIZED = new HttpError(401, '', { 'WWW-Authenticate': 'Token' });

/** The credential in an Authorization header, or undefined when it is missing or malformed. */
export function parseAuthorization(header: string | undefined): Credential | undefined {
  const match = /^Token\s+([A-Za-z0-9+/_-]+={0,2})\s*$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0 || colon === decoded.length - 1) return undefined;
  return { name: decoded.slice(0, colon), secret: decoded.slice(colon + 1) };
}

/** The configured "service:token" pairs, kept as hashes and compared in constant time. */
export class TrustedTokens {
  readonly #hashes: string[];

  constructor(pairs: readonly string[]) {
    this.#hashes = pairs.map(hashToken);
  }

  /** Compares against every configured pair, so the time taken says nothing about which one (if any) matched. */
  accepts(credential: Credential): boolean {
    return tokenMatches(`${credential.name}:${credential.secret}`, this.#hashes);
  }
}

/**
 * The user in the path, in the box's canonical spelling: a Soledad client names its user as LEAP does, 32 hex
 * digits without dashes (`canonicalUserId`). Runs before the credential checks, so both spellings are one user.
 */
export function canonicalUserParam(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
  const params = request.params as { user?: string };
  if (params.user !== undefined) params.user = canonicalUserId(params.user) ?? params.user;
  done();
}

/** /incoming/…: only a Trusted Application's credential. */
export function trustedOnly(trusted: TrustedTokens) {
  return (request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    const credential = parseAuthorization(request.headers.authorization);
    done(credential && trusted.accepts(credential) ? undefined : UNAUTHORIZED);
  };
}

const credentialHashes = new WeakMap<FastifyRequest, string>();

/**
 * /blobs/{user}/…: only that user's own token; anything else is 401, whether or not the box exists. The token
 * that passed is remembered as its hash (`credentialOf`): it names the replica that reserves a blob.
 */
export function ownerOnly(users: BoxUserStore) {
  return async (request: FastifyRequest<{ Params: { user: string } }>): Promise<void> => {
    const credential = parseAuthorization(request.headers.authorization);
    const user = request.params.user;
    if (!credential || canonicalUserId(credential.name) !== user || !(await users.verifyToken(user, credential.secret))) throw UNAUTHORIZED;
    credentialHashes.set(request, hashToken(credential.secret));
  };
}

/** The SHA-256 (hex) of the user token a request passed `ownerOnly` with: as stored in lacre_box_tokens. */
export function credentialOf(request: FastifyRequest): string {
  const hash = credentialHashes.get(request);
  if (hash === undefined) throw new Error('credentialOf: the request did not pass ownerOnly');
  return hash;
}
