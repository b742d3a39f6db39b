/**
 * The key service's web page for people: upload a key (paste or file), see an address's status, ask for a
 * key's removal, and confirm what a mailed link offers. Server-rendered (views/*.eta, static/style.css at the
 * package root), no script, every string through the user's catalog. A GET never changes anything: mail
 * scanners follow links, so a confirmation link shows a button and only its POST acts.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import fastifyFormbody from '@fastify/formbody';
import fastifyMultipart from '@fastify/multipart';
import fastifyView from '@fastify/view';
import { Eta } from 'eta';
import { HttpError } from '../errors.js';
import { allowOnly, askForBody, type HttpApp } from '../http/stack.js';
import { findPackageRoot } from '../util/package-root.js';
import { WEB_BODY_LIMIT } from './api.js';
import { WebError } from './errors.js';
import type { Translate } from './i18n.js';
import { limitPerIp } from './rate-limit.js';
import type { WebDeps } from './server.js';

export const PAGE_CSP = "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': PAGE_CSP,
  'x-content-type-options': 'nosniff',
  // A confirmation link's token is in the URL: never hand it to another site.
  'referrer-policy': 'no-referrer',
};

const TOKEN_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
const MULTIPART_LIMITS = { fileSize: WEB_BODY_LIMIT, fieldSize: WEB_BODY_LIMIT, files: 1, fields: 8, parts: 9 };

interface Language {
  readonly code: string;
  readonly name: string;
  readonly href: string;
  readonly current: boolean;
}

/** What every view gets: the language, its translator and the links that keep the language. */
interface Frame {
  readonly lang: string;
  readonly t: Translate;
  readonly home: string;
  readonly languages: readonly Language[];
  readonly stylesheet: string;
}

interface UploadForm {
  readonly key: string | Uint8Array;
  readonly email?: string;
  readonly style?: 'mime' | 'inline';
}

/** The language a request's form asked for (multipart bodies are read by the handler, not by fastify). */
const formLanguage = new WeakMap<FastifyRequest, string>();

export function registerPageRoutes(app: HttpApp, deps: WebDeps): void {
  const root = findPackageRoot();
  const css = readFileSync(join(root, 'static', 'style.css'));
  const stylesheet = `/static/style.css?v=${createHash('sha256').update(css).digest('hex').slice(0, 12)}`;

  const perIp = limitPerIp(deps);
  const posted = { bodyLimit: WEB_BODY_LIMIT, preHandler: perIp };

  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    await scope.register(fastifyFormbody, { bodyLimit: WEB_BODY_LIMIT });
    await scope.register(fastifyMultipart, { limits: MULTIPART_LIMITS });
    await scope.register(fastifyView, { engine: { eta: new Eta({ autoEscape: true }) }, root: join(root, 'views') });

    scope.addHook('onSend', async (_request, reply) => {
      reply.headers(PAGE_HEADERS);
    });
    // A client that sent "Expect: 100-continue" (curl does, for an upload over 1 KiB) waits for it before the body.
    scope.addHook('preParsing', (request, reply, payload, done) => {
      askForBody(request, reply);
      done(null, payload);
    });
    scope.setErrorHandler((error, request, reply) => renderError(reply, asWebError(error, request, deps), frame(request, deps, stylesheet, true)));

    scope.get('/static/style.css', async (_request, reply) =>
      reply.type('text/css; charset=utf-8').header('cache-control', 'public, max-age=31536000, immutable').send(css),
    );

    scope.get('/', async (request, reply) => {
      const view = frame(request, deps, stylesheet);
      return render(reply, 'index', view, { title: view.t('Publish your OpenPGP key') });
    });

    scope.post('/upload', posted, async (request, reply) => {
      const form = await readUploadForm(request);
      const view = frame(request, deps, stylesheet, true);
      const result = await deps.service.upload({ ...form, lang: view.lang });
      const { t } = view;
      if (result.status === 'revoked') {
        return renderMessage(reply, view, t('The revocation was taken'), [t('Mail to {email} is no longer encrypted to this revoked key. Upload a new key to go on receiving encrypted mail.', { email: result.email })], result);
      }
      if (result.status === 'confirmed') {
        return renderMessage(reply, view, t('This key is already published'), [t('This key is already the published key for {email}. There is nothing more to do.', { email: result.email })], result);
      }
      return renderMessage(reply.code(202), view, t('Check your mail'), [
        t('We sent a message to {email}, encrypted to this key.', { email: result.email }),
        t('Decrypt it and open the link inside to publish the key. The link works once and expires in {hours} hours.', { hours: deps.config.web.token_ttl_hours }),
      ], result);
    });

    scope.get('/status', async (request, reply) => {
      const view = frame(request, deps, stylesheet);
      const email = field(request.query, 'email');
      if (email === undefined || email.trim() === '') throw invalidForm();
      const status = await deps.service.status(email.trim());
      const { t } = view;
      const paragraphs = {
        confirmed: t('Mail to {email} is encrypted to the key below.', { email: status.email }),
        pending: t('A key for {email} waits for confirmation; mail is not encrypted to it yet.', { email: status.email }),
        none: t('No key is published for {email}; mail to it is not encrypted.', { email: status.email }),
      };
      const details = [
        { label: t('Email address'), value: status.email },
        { label: t('Status'), value: statusName(t, status.status) },
        ...(status.fingerprint ? [{ label: t('Fingerprint'), value: status.fingerprint, code: true }] : []),
        ...(status.created ? [{ label: t('Created'), value: day(status.created) }] : []),
        ...(status.fingerprint ? [{ label: t('Expires'), value: status.expires ? day(status.expires) : t('never') }] : []),
      ];
      return render(reply, 'message', view, { title: t('Key status'), paragraphs: [paragraphs[status.status]], details, links: [{ href: view.home, text: t('Back to the start page') }] });
    });

    scope.post('/delete', posted, async (request, reply) => {
      const view = frame(request, deps, stylesheet, true);
      const email = field(request.body, 'email');
      if (email === undefined || email.trim() === '') throw invalidForm();
      const result = await deps.service.requestDelete(email.trim(), view.lang);
      const { t } = view;
      return renderMessage(reply.code(202), view, t('Check your mail'), [
        t('We sent a message to {email}, encrypted to its published key.', { email: result.email }),
        t('Decrypt it and open the link inside to remove the key. The link works once and expires in {hours} hours.', { hours: deps.config.web.token_ttl_hours }),
      ], result);
    });

    scope.get<{ Params: { token: string } }>('/confirm/:token', async (request, reply) => {
      const token = checkedToken(request.params.token);
      const offer = await deps.service.describeRequest(token);
      const view = frame(request, deps, stylesheet, false, offer.lang ?? undefined);
      const { t } = view;
      const publish = offer.action === 'publish';
      return render(reply.header('cache-control', 'no-store'), 'confirm', view, {
        title: publish ? t('Publish this key?') : t('Remove this key?'),
        paragraphs: publish
          ? [t('Once published, mail to {email} is encrypted to this key. A key published before for this address is kept, disabled.', { email: offer.email })]
          : [t('Once removed, mail to {email} is no longer encrypted, and the address is forgotten with all its keys.', { email: offer.email })],
        email: offer.email,
        fingerprint: offer.fingerprint,
        action: `/confirm/${encodeURIComponent(token)}`,
        button: publish ? t('Publish key') : t('Remove key'),
        danger: !publish,
      });
    });

    scope.post<{ Params: { token: string } }>('/confirm/:token', posted, async (request, reply) => {
      const token = checkedToken(request.params.token);
      const view = frame(request, deps, stylesheet, true);
      const done = await deps.service.confirm(token);
      const { t } = view;
      reply.header('cache-control', 'no-store');
      if (done.action === 'publish') {
        return renderMessage(reply, view, t('Key published'), [t('Mail to {email} is now encrypted to this key.', { email: done.email })], done);
      }
      return renderMessage(reply, view, t('Key removed'), [t('The key of {email} is removed; mail to this address is no longer encrypted.', { email: done.email })], done);
    });

    allowOnly(scope, '/', ['GET']);
    allowOnly(scope, '/status', ['GET']);
    allowOnly(scope, '/upload', ['POST']);
    allowOnly(scope, '/delete', ['POST']);
    allowOnly(scope, '/confirm/:token', ['GET', 'POST']);
  });
}

function renderMessage(reply: FastifyReply, view: Frame, title: string, paragraphs: string[], key: { email: string; fingerprint: string }): FastifyReply {
  const { t } = view;
  const statusLink = `/status?email=${encodeURIComponent(key.email)}&lang=${encodeURIComponent(view.lang)}`;
  return render(reply, 'message', view, {
    title,
    paragraphs,
    details: [
      { label: t('Email address'), value: key.email },
      { label: t('Fingerprint'), value: key.fingerprint, code: true },
    ],
    links: [
      { href: statusLink, text: t('See the status of {email}', { email: key.email }) },
      { href: view.home, text: t('Back to the start page') },
    ],
  });
}

function renderError(reply: FastifyReply, error: WebError, view: Frame): FastifyReply {
  const answer = reply.code(error.status).headers(error.headers).header('cache-control', 'no-store');
  // A body refused before its end would otherwise be read on, to its end or the request timeout.
  if (!reply.request.raw.complete) answer.header('connection', 'close');
  return render(answer, 'error', view, { title: view.t('That did not work'), message: view.t(error.msgid, error.values) });
}

/** One of views/*.eta in the frame's language. */
function render(reply: FastifyReply, template: string, view: Frame, data: Record<string, unknown>): FastifyReply {
  return reply.header('content-language', view.lang).view(template, { ...view, ...data });
}

/**
 * The view's frame for this request. The language is the form's `lang` (POST), else `?lang=`, else
 * `preferred` (what a confirmation request was made in), else Accept-Language, else the configured default.
 * After a POST the language links lead to the start page, since the POST's own URL shows nothing on a GET.
 */
function frame(request: FastifyRequest, deps: WebDeps, stylesheet: string, posted = false, preferred?: string): Frame {
  const asked = formLanguage.get(request) ?? field(request.body, 'lang') ?? field(request.query, 'lang') ?? preferred;
  const lang = deps.catalogs.choose(asked, request.headers['accept-language'], deps.config.web.default_language);
  const path = posted ? '/' : pathOf(request.url);
  const query = posted ? new URLSearchParams() : new URLSearchParams(queryOf(request.url));
  const linkTo = (code: string): string => {
    query.set('lang', code);
    return `${path}?${query.toString()}`;
  };
  return {
    lang,
    t: deps.catalogs.translator(lang),
    home: `/?lang=${encodeURIComponent(lang)}`,
    stylesheet,
    languages: deps.catalogs.languages.map((code) => ({ code, name: languageName(code), href: linkTo(code), current: code === lang })),
  };
}

/** Upload fields from a urlencoded or multipart body; a chosen file wins over the pasted text. */
async function readUploadForm(request: FastifyRequest): Promise<UploadForm> {
  const fields = request.isMultipart() ? await readMultipart(request) : readUrlencoded(request.body);
  const key = fields.file !== undefined && fields.file.length > 0 ? fields.file : (fields.key ?? '');
  if (typeof key === 'string' && key.trim() === '') throw new WebError(400, 'not-a-key', 'Paste your public key or choose a key file.');
  const style = fields.style;
  if (style !== undefined && style !== 'mime' && style !== 'inline') throw invalidForm();
  const email = fields.email?.trim();
  return { key, ...(email ? { email } : {}), ...(style ? { style } : {}) };
}

interface RawUploadFields {
  key?: string;
  file?: Buffer;
  email?: string;
  style?: string;
  lang?: string;
}

const UPLOAD_FIELDS = ['key', 'email', 'style', 'lang'] as const;

function readUrlencoded(body: unknown): RawUploadFields {
  const fields: RawUploadFields = {};
  for (const name of UPLOAD_FIELDS) {
    const value = field(body, name);
    if (value !== undefined) fields[name] = value;
  }
  return fields;
}

/**
 * The form's parts, guarded against what @fastify/busboy 3.2.6 does with a hostile body: it reads every byte of a
 * preamble, epilogue or skipped part without counting it (so the raw body is counted here, 413 beyond 64 KiB; a
 * Content-Length past it is refused at the body's first pause, the form's language read by then), it falls silent for good when the last part is skipped and outgrows its buffer
 * (GHSA-5mv5-vr5f-hmvr: a body that stops flowing with no end in sight is refused after PARSER_STALL_MS), and
 * it rejects a malformed body with untyped errors (a 400 here, not a 503).
 */
async function readMultipart(request: FastifyRequest): Promise<RawUploadFields> {
  // Started first: its first step pipes the body into busboy before the guard's 'data' listener sets it flowing.
  const reading = collectParts(request);
  const guard = guardMultipartBody(request.raw, Number(request.headers['content-length']) > WEB_BODY_LIMIT);
  try {
    return await Promise.race([reading, guard.refused]);
  } catch (error) {
    throw asFormRefusal(error);
  } finally {
    guard.stop();
    reading.catch(() => {});
  }
}

/**
 * Busboy handles a part in milliseconds and the form's reader never waits, so a body that has stopped flowing
 * (all in, or held back by busboy) without a new byte for this long means busboy is stuck; a client that is slow
 * to send is left to web.request_timeout_seconds.
 */
const PARSER_STALL_MS = 1_000;

interface BodyGuard {
  /** Rejects with 413 past 64 KiB of raw body, with 400 when the parser stalls. */
  readonly refused: Promise<never>;
  stop(): void;
}

/** `declaredTooLarge`: the Content-Length is past 64 KiB, so a pause in the body is refused at once (413), not waited on. */
function guardMultipartBody(raw: IncomingMessage, declaredTooLarge: boolean): BodyGuard {
  let received = 0;
  let seen = 0;
  let refuse: (error: WebError) => void = () => {};
  const refused = new Promise<never>((_resolve, reject) => {
    refuse = reject;
  });
  const onData = (chunk: Buffer): void => {
    received += chunk.length;
    if (received > WEB_BODY_LIMIT) refuse(tooLarge());
  };
  const watch = setInterval(() => {
    const held = raw.readableEnded || raw.isPaused();
    if (received === seen && declaredTooLarge) refuse(tooLarge());
    else if (received === seen && held) refuse(invalidForm());
    seen = received;
  }, PARSER_STALL_MS);
  raw.on('data', onData);
  return {
    refused,
    stop() {
      raw.off('data', onData);
      clearInterval(watch);
    },
  };
}

async function collectParts(request: FastifyRequest): Promise<RawUploadFields> {
  const fields: RawUploadFields = {};
  let total = 0;
  for await (const part of request.parts()) {
    if (part.type === 'file') {
      const content = await part.toBuffer();
      total += content.length;
      if (part.fieldname === 'keyfile') fields.file = content;
    } else {
      if (part.valueTruncated) throw tooLarge();
      const value = typeof part.value === 'string' ? part.value : '';
      total += Buffer.byteLength(value);
      if ((UPLOAD_FIELDS as readonly string[]).includes(part.fieldname)) fields[part.fieldname as (typeof UPLOAD_FIELDS)[number]] = value;
      // Known as soon as read, so that a refusal of what follows is in the form's language.
      if (part.fieldname === 'lang') formLanguage.set(request, value);
    }
    if (total > WEB_BODY_LIMIT) throw tooLarge();
  }
  return fields;
}

/** @fastify/multipart's own refusals carry their status (413 past a limit); busboy's parse errors do not: the body is malformed. */
function asFormRefusal(error: unknown): unknown {
  if (error instanceof WebError || typeof (error as { statusCode?: unknown }).statusCode === 'number') return error;
  // busboy's parse errors are plain Errors; anything else (a TypeError...) is a fault of Lacre's, logged as one.
  return error instanceof Error && error.constructor === Error ? invalidForm() : error;
}

/** A string field of a parsed body or query; a repeated field counts as missing. */
function field(source: unknown, name: string): string | undefined {
  if (typeof source !== 'object' || source === null) return undefined;
  const value = (source as Record<string, unknown>)[name];
  return typeof value === 'string' ? value : undefined;
}

function checkedToken(token: string): string {
  if (!TOKEN_PATTERN.test(token)) throw new WebError(404, 'token-unknown', 'This link is not valid. Copy the whole link from the mail, or start again.');
  return token;
}

/** Any failure as the page shows it: the service's refusals as they are, the stack's by their status. */
function asWebError(error: unknown, request: FastifyRequest, deps: WebDeps): WebError {
  if (error instanceof WebError) return error;
  const status = error instanceof HttpError ? error.status : (error as { statusCode?: number }).statusCode;
  if (status === 413) return tooLarge();
  if (status === 404) return new WebError(404, 'not-found', 'There is no such page.');
  if (status === 405) return new WebError(405, 'method-not-allowed', 'This page cannot be used that way. Start again from the start page.', {}, error instanceof HttpError ? error.headers : {});
  if (status !== undefined && status >= 400 && status < 500) return invalidForm(status);
  // The route's pattern, not its path: a confirmation path holds a token, which no log line may.
  deps.logger.error({ method: request.method, route: request.routeOptions.url, err: error }, 'web page request failed');
  return new WebError(503, 'unavailable', 'The key service cannot answer right now. Please try again later.');
}

function invalidForm(status = 400): WebError {
  return new WebError(status, 'invalid-request', 'The form was not filled in as expected. Please go back and try again.');
}

function tooLarge(): WebError {
  return new WebError(413, 'too-large', 'That is too large: a public key upload may be at most 64 KiB.');
}

function statusName(t: Translate, status: 'confirmed' | 'pending' | 'none'): string {
  if (status === 'confirmed') return t('Published');
  if (status === 'pending') return t('Waiting for confirmation');
  return t('No key');
}

/** A date as YYYY-MM-DD: unambiguous in every language. */
function day(iso: string): string {
  return iso.slice(0, 10);
}

/** A language's name in that language ("español"), for the switcher. */
function languageName(code: string): string {
  try {
    return new Intl.DisplayNames([code], { type: 'language' }).of(code) ?? code;
  } catch {
    return code;
  }
}

function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

function queryOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? '' : url.slice(query + 1);
}
