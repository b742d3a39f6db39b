/**
 * The real Incoming Box (src/box) on a fresh test database and blob directory, for the consumer
 * tests: users with tokens, and delivery as the Trusted Application over HTTP. Binds to 127.0.0.1 only.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log/logger.js';
import { startIncomingBoxServer } from '../../src/box/server.js';
import { BoxUserStore } from '../../src/box/users.js';
import { openTestDatabase, type TestBackend } from '../helpers/databases.js';

const SERVICE = 'lacre-mx';
const SERVICE_SECRET = 'consumer-test-secret';

export interface BoxUser {
  user: string;
  token: string;
}

export interface RealBox {
  readonly url: string;
  /** The box's blob directory: `{blobsPath}/{user}/{namespace}/{id}.{random}`. */
  readonly blobsPath: string;
  /** A new user (one address) with one token. */
  createUser(): Promise<BoxUser>;
  /** PUT /incoming/{user}/{id} with the service token, as `lacre serve` delivers; resolves with the status. */
  deliver(user: string, id: string, body: Buffer | string, scheme?: string): Promise<number>;
  /** The client version the box recorded with a FAILED mark. */
  clientVersionOf(user: string, id: string): Promise<string | null>;
  close(): Promise<void>;
}

export async function startRealBox(backend: TestBackend): Promise<RealBox> {
  const database = await openTestDatabase(backend);
  const blobsPath = await mkdtemp(join(tmpdir(), 'lacre-consumer-box-'));
  const config = configSchema.parse({
    incoming_box: { listen: '127.0.0.1:0', blobs_path: blobsPath, trusted_tokens: [`${SERVICE}:${SERVICE_SECRET}`] },
  });
  const server = await startIncomingBoxServer(config, database.db, createLogger('silent'));
  const users = new BoxUserStore(database.db);
  const url = `http://127.0.0.1:${server.port}`;
  const serviceAuth = `Token ${Buffer.from(`${SERVICE}:${SERVICE_SECRET}`).toString('base64')}`;
  return {
    url,
    blobsPath,
    async createUser() {
      const { user } = await users.add(`${randomUUID()}@example.org`);
      return { user, token: (await users.createToken(user)).token };
    },
    async deliver(user, id, body, scheme) {
      const headers: Record<string, string> = { authorization: serviceAuth };
      if (scheme) headers['x-incoming-scheme'] = scheme;
      const payload = typeof body === 'string' ? body : new Uint8Array(body);
      const response = await fetch(`${url}/incoming/${user}/${id}`, { method: 'PUT', headers, body: payload });
      await response.arrayBuffer();
      return response.status;
    },
    async clientVersionOf(user, id) {
      const rows = await database.db.query<{ failed_version: string | null }>(
        'SELECT failed_version FROM lacre_blobs WHERE user_uuid = $1 AND blob_id = $2',
        [user, id],
      );
      return rows[0]?.failed_version ?? null;
    },
    async close() {
      await server.close();
      await database.cleanup();
      await rm(blobsPath, { recursive: true, force: true });
    },
  };
}
