import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../config/schema.js';
import { BoxDeliveryError } from '../errors.js';
import type { BoxDownstream, BoxScheme } from '../filter/ports.js';

/** Bodies longer than this in an error answer are cut: they only go into a log line. */
const MAX_ERROR_BODY = 4096;

/**
 * The Trusted Application side of the Incoming Box: streams a copy with
 * `PUT {url}/incoming/{user}/{blob_id}?namespace=N` and `Authorization: Token base64("service:token")`,
 * as LEAP's MX did against Soledad. 200 is stored, 409 is "already stored" (a retry: success too);
 * anything else is a BoxDeliveryError carrying the status for the SMTP reply.
 */
export class HttpBoxDownstream implements BoxDownstream {
  private readonly base: URL;
  private readonly agent: http.Agent;
  private readonly authorization: string;

  constructor(private readonly config: Config['incoming_box']) {
    if (!config.url) throw new BoxDeliveryError('incoming_box.url is not set');
    if (!config.token) throw new BoxDeliveryError('incoming_box.token ("service:token") is required with incoming_box.url');
    this.base = new URL(config.url);
    const secure = this.base.protocol === 'https:';
    const options = { keepAlive: true, maxSockets: config.max_connections };
    this.agent = secure ? new https.Agent(options) : new http.Agent(options);
    this.authorization = `Token ${Buffer.from(config.token).toString('base64')}`;
  }

  async put(user: string, blobId: string, scheme: BoxScheme, raw: Readable): Promise<void> {
    const url = new URL(this.base);
    url.pathname = `${this.base.pathname.replace(/\/+$/, '')}/incoming/${encodeURIComponent(user)}/${encodeURIComponent(blobId)}`;
    url.search = new URLSearchParams({ namespace: this.config.namespace }).toString();
    const { status, body } = await this.request(url, scheme, raw);
    if (status === 200 || status === 409) return;
    throw new BoxDeliveryError(`Incoming Box answered ${status}${body ? `: ${body}` : ''}`, status);
  }

  /** Resolves when the box is reachable (any HTTP answer counts). */
  async reachable(): Promise<boolean> {
    return new Promise((resolve) => {
      const request = (this.base.protocol === 'https:' ? https : http).request(this.base, { method: 'HEAD', agent: this.agent, timeout: 5000 }, (response) => {
        response.resume();
        resolve(true);
      });
      request.on('error', () => resolve(false));
      request.on('timeout', () => request.destroy());
      request.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }

  private request(url: URL, scheme: BoxScheme, raw: Readable): Promise<{ status: number; body: string }> {
    const transport = url.protocol === 'https:' ? https : http;
    const timeoutMs = this.config.timeout_seconds * 1000;
    return new Promise((resolve, reject) => {
      const request = transport.request(url, {
        method: 'PUT',
        agent: this.agent,
        timeout: timeoutMs,
        headers: { Authorization: this.authorization, 'X-Incoming-Scheme': scheme, 'Content-Type': 'application/octet-stream' },
      });
      const fail = (error: unknown) => reject(error instanceof BoxDeliveryError ? error : new BoxDeliveryError(`Incoming Box unreachable: ${(error as Error).message}`, undefined, { cause: error }));
      request.on('timeout', () => request.destroy(new BoxDeliveryError(`Incoming Box did not answer within ${this.config.timeout_seconds} s`)));
      request.on('error', fail);
      request.on('response', (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (body.length < MAX_ERROR_BODY) body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: body.slice(0, MAX_ERROR_BODY).trim() }));
        response.on('error', fail);
      });
      pipeline(raw, request).catch(fail);
    });
  }
}
