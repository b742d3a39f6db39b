/**
 * `lacre keys` (and any Node script) on the running service's admin socket: the same KeyAdmin operations as on
 * the database, over HTTP on a Unix socket (node:http with socketPath).
 */
import { request } from 'node:http';
import { LacreError } from '../errors.js';
import { ADMIN_REFUSAL_STATUS, AdminRefusal, type AdminRefusalCode, type ImportReport, type ImportRequest, type KeyAdmin, type KeyView, type RestoreReport } from './operations.js';
import type { AdminHello } from './server.js';

/** A request that did not get an answer from the socket, or an answer that is not the admin API's. */
export class AdminSocketError extends LacreError {}

const PROBE_TIMEOUT_MS = 5_000;
/** An import parses and validates every key of a file: give it time. */
const REQUEST_TIMEOUT_MS = 120_000;

/** Errors that mean "no service here": the socket file is missing, or nobody listens on it. */
const NOBODY_LISTENS = new Set(['ENOENT', 'ECONNREFUSED']);

export class AdminClient implements KeyAdmin {
  private constructor(
    readonly path: string,
    readonly maxKeyBytes: number,
  ) {}

  /**
   * The client of the service answering on `path`; undefined when none does (no socket file, or a stale one).
   * A socket this user may not use is an error: a service runs, so the database is not ours to open either.
   */
  static async connect(path: string): Promise<AdminClient | undefined> {
    let hello: AdminHello;
    try {
      hello = (await call(path, 'GET', '/', undefined, PROBE_TIMEOUT_MS)) as AdminHello;
    } catch (error) {
      if (NOBODY_LISTENS.has((error as NodeJS.ErrnoException).code ?? '')) return undefined;
      if ((error as NodeJS.ErrnoException).code === 'EACCES') {
        throw new AdminSocketError(`admin.socket ${path}: permission denied; a lacre serve runs there: run this command as its user`, { cause: error });
      }
      throw error;
    }
    if (hello?.service !== 'lacre-admin') throw new AdminSocketError(`admin.socket ${path}: what answers there is not lacre's admin socket`);
    return new AdminClient(path, hello.maxKeyBytes);
  }

  async importKeys(input: ImportRequest): Promise<ImportReport[]> {
    const { key, ...rest } = input;
    const body = typeof key === 'string' ? { ...rest, armored: key } : { ...rest, base64: Buffer.from(key).toString('base64') };
    return ((await this.call('POST', '/keys', body)) as { outcomes: ImportReport[] }).outcomes;
  }

  async list(): Promise<KeyView[]> {
    return ((await this.call('GET', '/keys')) as { keys: KeyView[] }).keys;
  }

  async show(address: string): Promise<KeyView[]> {
    return ((await this.call('GET', `/keys/${encodeURIComponent(address)}`)) as { keys: KeyView[] }).keys;
  }

  async pending(): Promise<KeyView[]> {
    return ((await this.call('GET', '/pending')) as { keys: KeyView[] }).keys;
  }

  async disable(addressOrFingerprint: string): Promise<number> {
    return ((await this.call('POST', `/keys/${encodeURIComponent(addressOrFingerprint)}/disable`, {})) as { disabled: number }).disabled;
  }

  async restore(fingerprint: string, address?: string): Promise<RestoreReport> {
    return (await this.call('POST', `/keys/${encodeURIComponent(fingerprint)}/restore`, address === undefined ? {} : { address })) as RestoreReport;
  }

  async remove(addressOrFingerprint: string): Promise<number> {
    return ((await this.call('DELETE', `/keys/${encodeURIComponent(addressOrFingerprint)}`)) as { removed: number }).removed;
  }

  async close(): Promise<void> {}

  private call(method: string, path: string, body?: unknown): Promise<unknown> {
    return call(this.path, method, path, body, REQUEST_TIMEOUT_MS);
  }
}

/** One request; resolves to the parsed JSON answer, rejects with the AdminRefusal the service answered. */
function call(socketPath: string, method: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        socketPath,
        method,
        path,
        timeout: timeoutMs,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': payload.length },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          try {
            resolve(answerOf(socketPath, response.statusCode ?? 0, Buffer.concat(chunks).toString('utf8')));
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    outgoing.on('timeout', () => outgoing.destroy(new AdminSocketError(`admin.socket ${socketPath}: no answer within ${timeoutMs / 1000} s`)));
    outgoing.on('error', reject);
    outgoing.end(payload);
  });
}

function answerOf(socketPath: string, status: number, text: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new AdminSocketError(`admin.socket ${socketPath}: HTTP ${status} without a JSON body`);
  }
  if (status >= 200 && status < 300) return parsed;
  const { error, message } = (parsed ?? {}) as { error?: string; message?: string };
  if (error !== undefined && error in ADMIN_REFUSAL_STATUS) throw new AdminRefusal(error as AdminRefusalCode, message ?? error);
  throw new AdminSocketError(`admin.socket ${socketPath}: HTTP ${status}${message ? `: ${message}` : ''}`);
}
