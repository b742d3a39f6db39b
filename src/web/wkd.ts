/**
 * The Web Key Directory routes: confirmed keys at the advanced (`/.well-known/openpgpkey/{domain}/hu/{hash}`,
 * served on openpgpkey.{domain}) and direct (`/.well-known/openpgpkey/hu/{hash}`, served on {domain} itself, the
 * domain taken from Host) paths, the policy file, and the WKS submission address with its key. Only domains of
 * keys.domains are answered; anything else, and any address without a confirmed key, is a plain 404.
 */
import { readKey, type Key } from 'openpgp';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config/schema.js';
import { errorMessage, HttpError } from '../errors.js';
import type { HttpApp } from '../http/stack.js';
import { canonicalDomain } from '../keys/address.js';
import type { Logger } from '../log/logger.js';
import type { KeyService } from './service.js';
import { WebError } from './errors.js';
import { isWkdHash, keyForAddress, wkdHash } from './wkd-format.js';
import { loadSubmissionKey } from './wks-key.js';

/** What the routes need of the web listener's WebDeps. */
export interface WkdDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly service: Pick<KeyService, 'confirmedKeysOfDomain' | 'confirmedKeysOfAddress'>;
}

const PREFIX = '/.well-known/openpgpkey';
/**
 * No flags: keys may carry a name besides the mailbox, and a submission needs no authentication beyond the mail
 * round trip. Protocol version 3: the WKS messages use application/vnd.gnupg.wks, which is what GnuPG 2.2's client
 * reads (the draft says clients expect that below 5). Every line ends in LF: gpg refuses an unterminated one.
 */
function policyFile(submissionAddress: string | undefined): string {
  const lines = ['# Web Key Directory policy (draft-koch-openpgp-webkey-service)', 'protocol-version: 3'];
  if (submissionAddress !== undefined) lines.push(`submission-address: ${submissionAddress}`);
  return lines.map((line) => `${line}\n`).join('');
}

interface DomainParams {
  domain: string;
}
interface HashParams {
  hash: string;
}
/** `?l=`: the local part as the client typed it (GnuPG always sends it). */
interface LocalQuery {
  l?: string;
}

export function registerWkdRoutes(app: HttpApp, deps: WkdDeps): void {
  const directory = new WkdDirectory(deps);
  app.get<{ Params: DomainParams & HashParams; Querystring: LocalQuery }>(`${PREFIX}/:domain/hu/:hash`, async (request, reply) =>
    sendKeys(reply, await directory.keys(request.params.domain, request.params.hash, localPart(request.query))),
  );
  app.get<{ Params: HashParams; Querystring: LocalQuery }>(`${PREFIX}/hu/:hash`, async (request, reply) =>
    sendKeys(reply, await directory.keys(hostDomain(request), request.params.hash, localPart(request.query))),
  );
  app.get<{ Params: DomainParams }>(`${PREFIX}/:domain/policy`, async (request, reply) =>
    sendText(reply, directory.policy(request.params.domain)),
  );
  app.get(`${PREFIX}/policy`, async (request, reply) => sendText(reply, directory.policy(hostDomain(request))));
  app.get<{ Params: DomainParams }>(`${PREFIX}/:domain/submission-address`, async (request, reply) =>
    sendText(reply, directory.submissionAddress(request.params.domain)),
  );
  app.get(`${PREFIX}/submission-address`, async (request, reply) =>
    sendText(reply, directory.submissionAddress(hostDomain(request))),
  );
}

function localPart(query: LocalQuery): string | undefined {
  return typeof query.l === 'string' && query.l !== '' ? query.l : undefined;
}

/** The direct method's domain is the host the client asked for (the proxy must pass Host on, or X-Forwarded-Host with web.trust_proxy). */
function hostDomain(request: FastifyRequest): string {
  return request.hostname.replace(/:\d+$/, '');
}

function sendKeys(reply: FastifyReply, keys: Uint8Array): FastifyReply {
  return reply
    .header('Access-Control-Allow-Origin', '*')
    .type('application/octet-stream')
    .send(Buffer.from(keys.buffer, keys.byteOffset, keys.byteLength));
}

function sendText(reply: FastifyReply, text: string): FastifyReply {
  return reply.header('Access-Control-Allow-Origin', '*').type('text/plain; charset=utf-8').send(text);
}

function notFound(): HttpError {
  return new HttpError(404, '');
}

class WkdDirectory {
  private submissionKey: Key | undefined;

  constructor(private readonly deps: WkdDeps) {}

  /** The served domain `domain` names, or a 404. */
  private servedDomain(domain: string): string {
    let canonical: string;
    try {
      canonical = canonicalDomain(domain);
    } catch {
      throw notFound();
    }
    if (!this.deps.config.keys.domains.some((served) => canonicalDomain(served) === canonical)) throw notFound();
    return canonical;
  }

  policy(domain: string): string {
    this.servedDomain(domain);
    return policyFile(this.deps.config.web.wks_submission_address);
  }

  submissionAddress(domain: string): string {
    this.servedDomain(domain);
    const address = this.deps.config.web.wks_submission_address;
    if (address === undefined) throw notFound();
    return `${address}\n`;
  }

  /**
   * Every confirmed key of `domain` whose local part hashes to `hash`, each with only that address's user ID. With
   * `?l=` (GnuPG sends it) only that address's keys are read; without it, the domain's (older clients).
   */
  async keys(domain: string, hash: string, local: string | undefined): Promise<Uint8Array> {
    const served = this.servedDomain(domain);
    if (!isWkdHash(hash)) throw notFound();
    if (local !== undefined && wkdHash(local) !== hash) throw notFound();
    const candidates = local === undefined ? this.deps.service.confirmedKeysOfDomain(served) : this.confirmedKeysOf(`${local}@${served}`);
    const parts: Uint8Array[] = [];
    for (const { email, armored } of await candidates) {
      if (wkdHash(email.slice(0, email.lastIndexOf('@'))) !== hash) continue;
      const key = await readKey({ armoredKey: armored }).catch(() => undefined);
      const binary = key && (await keyForAddress(key, email));
      if (binary) parts.push(binary);
    }
    const submission = await this.submissionKeyFor(served, hash);
    if (submission) parts.push(submission);
    if (parts.length === 0) throw notFound();
    return Buffer.concat(parts);
  }

  private async confirmedKeysOf(address: string): Promise<{ email: string; armored: string }[]> {
    try {
      return await this.deps.service.confirmedKeysOfAddress(address);
    } catch (error) {
      if (error instanceof WebError && (error.code === 'invalid-address' || error.code === 'domain-not-served')) return [];
      throw error;
    }
  }

  /** The WKS submission key's public part, when `hash` is its address's and the key file is there. */
  private async submissionKeyFor(domain: string, hash: string): Promise<Uint8Array | undefined> {
    const address = this.deps.config.web.wks_submission_address;
    if (address === undefined) return undefined;
    const at = address.lastIndexOf('@');
    if (canonicalDomain(address.slice(at + 1)) !== domain || wkdHash(address.slice(0, at)) !== hash) return undefined;
    const key = await this.loadSubmissionKey();
    return key && (await keyForAddress(key, address));
  }

  private async loadSubmissionKey(): Promise<Key | undefined> {
    if (this.submissionKey) return this.submissionKey;
    const path = this.deps.config.web.wks_key_path;
    try {
      this.submissionKey = (await loadSubmissionKey(path)).toPublic();
    } catch (error) {
      this.deps.logger.warn({ path, reason: errorMessage(error) }, 'WKS submission key not readable (lacre wks init creates it)');
    }
    return this.submissionKey;
  }
}
