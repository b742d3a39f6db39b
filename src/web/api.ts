/**
 * The key service's JSON API (README "Key service API", docs/openapi.yaml). Every refusal is a WebError, written
 * as `{"error": code, "message": translated}` by the listener; every state-changing route counts against the
 * client's hourly limit first.
 */
import type { FastifyRequest } from 'fastify';
import { acceptJsonBodies, allowOnly, type HttpApp } from '../http/stack.js';
import { WebError } from './errors.js';
import { limitPerIp } from './rate-limit.js';
import type { WebDeps } from './server.js';

/** The routes, for the test that holds docs/openapi.yaml to them: method and path as OpenAPI spells them. */
export const API_ROUTES = [
  ['post', '/api/keys'],
  ['get', '/api/keys/{address}'],
  ['delete', '/api/keys/{address}'],
  ['post', '/api/keys/{address}/delete'],
  ['post', '/api/confirm/{token}'],
] as const;

const TOKEN = /^[A-Za-z0-9_-]{1,128}$/;

export function registerApiRoutes(app: HttpApp, deps: WebDeps): void {
  void app.register(async (scope) => {
    acceptJsonBodies(scope, 64 * 1024, () => new WebError(400, 'invalid-request', 'The request body is not valid JSON.'));
    const limited = { preHandler: limitPerIp(deps) };

    scope.post('/api/keys', limited, async (request, reply) => {
      const body = uploadBody(request.body);
      const lang = languageOf(request, deps, body.lang);
      const result = await deps.service.upload({ key: body.key, lang, ...(body.email === undefined ? {} : { email: body.email }), ...(body.style ? { style: body.style } : {}) });
      return reply.code(result.status === 'pending' ? 202 : 200).send(result);
    });
    allowOnly(scope, '/api/keys', ['POST']);

    scope.get<{ Params: { address: string } }>('/api/keys/:address', async (request) => deps.service.status(request.params.address));
    scope.delete<{ Params: { address: string } }>('/api/keys/:address', limited, async (request, reply) =>
      reply.code(202).send(await deps.service.requestDelete(request.params.address, languageOf(request, deps))),
    );
    allowOnly(scope, '/api/keys/:address', ['GET', 'DELETE']);
    scope.post<{ Params: { address: string } }>('/api/keys/:address/delete', limited, async (request, reply) =>
      reply.code(202).send(await deps.service.requestDelete(request.params.address, languageOf(request, deps))),
    );
    allowOnly(scope, '/api/keys/:address/delete', ['POST']);

    scope.post<{ Params: { token: string } }>('/api/confirm/:token', limited, async (request) => {
      const token = request.params.token;
      if (!TOKEN.test(token)) throw new WebError(404, 'token-unknown', 'This confirmation link is not valid.');
      const done = await deps.service.confirm(token);
      return { status: done.action === 'publish' ? 'confirmed' : 'deleted', action: done.action, email: done.email, fingerprint: done.fingerprint };
    });
    allowOnly(scope, '/api/confirm/:token', ['POST']);
  });
}

/** The language of the client: `asked` (a body's "lang"), ?lang=, then Accept-Language, then web.default_language. */
export function languageOf(request: FastifyRequest, deps: Pick<WebDeps, 'catalogs' | 'config'>, asked?: string): string {
  const query = (request.query ?? {}) as Record<string, unknown>;
  return deps.catalogs.choose(asked ?? (typeof query.lang === 'string' ? query.lang : undefined), request.headers['accept-language'], deps.config.web.default_language);
}

interface UploadBody {
  key: string;
  email?: string;
  style?: 'mime' | 'inline';
  lang?: string;
}

function uploadBody(body: unknown): UploadBody {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('Send a JSON object with "key".');
  const { key, email, style, lang, ...rest } = body as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw invalid('Unknown field in the request: {field}.', { field: Object.keys(rest)[0]! });
  if (typeof key !== 'string' || key.trim() === '') throw invalid('"key" must hold the armored public key.');
  if (email !== undefined && typeof email !== 'string') throw invalid('"email" must be a string.');
  if (style !== undefined && style !== 'mime' && style !== 'inline') throw invalid('"style" must be "mime" or "inline".');
  if (lang !== undefined && (typeof lang !== 'string' || !/^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/.test(lang))) throw invalid('"lang" must be a language tag such as "es".');
  return { key, ...(email === undefined ? {} : { email }), ...(style === undefined ? {} : { style }), ...(lang === undefined ? {} : { lang }) };
}

function invalid(msgid: string, values: Record<string, string> = {}): WebError {
  return new WebError(400, 'invalid-request', msgid, values);
}
