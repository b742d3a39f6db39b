/** A box server in this process, on a fresh database and blob directory, and a small HTTP client for it. */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import type { OpenedDatabase } from '../../src/db/open.js';
import { createLogger } from '../../src/log/logger.js';
import { startIncomingBoxServer, type IncomingBoxServer } from '../../src/box/server.js';
import { BoxUserStore } from '../../src/box/users.js';
import { withDatabase, type TestBackend } from '../helpers/databases.js';

export const TRUSTED = 'lacre-mx:trusted-secret';

export function tokenHeader(name: string, secret: string): string {
  return `Token ${Buffer.from(`${name}:${secret}`).toString('base64')}`;
}

export const trustedAuth = tokenHeader('lacre-mx', 'trusted-secret');

/** Where deliveries land unless they name another namespace: Soledad's MX. */
export const MX = 'MX';

export interface BoxUser {
  id: string;
  token: string;
  auth: string;
}

export interface RequestOptions {
  auth?: string;
  body?: string | Buffer | ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
}

export interface TestBox {
  server: IncomingBoxServer;
  db: OpenedDatabase;
  users: BoxUserStore;
  blobsPath: string;
  base: string;
  /** A user with one address and one token. */
  createUser(address: string): Promise<BoxUser>;
  request(method: string, path: string, options?: RequestOptions): Promise<Response>;
  /** Delivers as the Trusted Application (into MX unless `namespace` is given). */
  deliver(user: string, id: string, body: string | Buffer, options?: { namespace?: string; scheme?: string }): Promise<Response>;
  /** Files in the blob directory of a user and namespace, and in the temporary directory. */
  files(user: string, namespace?: string): string[];
  tempFiles(): string[];
}

export type BoxSettings = ConfigInput['incoming_box'];

export function withBox(backend: TestBackend, settings: BoxSettings, use: (box: TestBox) => Promise<void>): Promise<void> {
  return withDatabase(backend, async (db) => {
    const blobsPath = mkdtempSync(join(tmpdir(), 'lacre-box-test-'));
    const config = configSchema.parse({
      incoming_box: { listen: '127.0.0.1:0', blobs_path: blobsPath, trusted_tokens: [TRUSTED], processing_threshold_seconds: 1, ...settings },
    });
    const server = await startIncomingBoxServer(config, db, createLogger('silent'));
    const users = new BoxUserStore(db);
    const base = `http://127.0.0.1:${server.port}`;
    const request = (method: string, path: string, options: RequestOptions = {}) => {
      const headers: Record<string, string> = { ...options.headers };
      if (options.auth !== undefined) headers.authorization = options.auth;
      const streaming = options.body !== undefined && typeof options.body !== 'string' && !Buffer.isBuffer(options.body);
      return fetch(`${base}${path}`, { method, headers, body: options.body, ...(streaming ? { duplex: 'half' } : {}) } as RequestInit);
    };
    const box: TestBox = {
      server,
      db,
      users,
      blobsPath,
      base,
      async createUser(address) {
        const { user } = await users.add(address);
        const { token } = await users.createToken(user);
        return { id: user, token, auth: tokenHeader(user, token) };
      },
      request,
      deliver(user, id, body, options = {}) {
        const query = options.namespace ? `?namespace=${options.namespace}` : '';
        const headers: Record<string, string> = options.scheme ? { 'x-incoming-scheme': options.scheme } : {};
        return request('PUT', `/incoming/${user}/${id}${query}`, { auth: trustedAuth, body, headers });
      },
      files: (user, namespace = MX) => listDir(join(blobsPath, user, namespace)),
      tempFiles: () => listDir(join(blobsPath, '.tmp')),
    };
    try {
      await use(box);
    } finally {
      await server.close();
      rmSync(blobsPath, { recursive: true, force: true });
    }
  });
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A body sent with chunked transfer encoding (no Content-Length). */
export function chunked(data: Buffer, chunkSize = 16 * 1024): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= data.length) return controller.close();
      controller.enqueue(data.subarray(offset, offset + chunkSize));
      offset += chunkSize;
    },
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
