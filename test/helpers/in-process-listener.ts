import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log/logger.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createSmtpListener, type SmtpListener } from '../../src/smtp/listener.js';

/** Lacre's SMTP listener in the test's own process, on a fresh embedded database, relaying to `relayPort`. */
export interface InProcessListener {
  readonly port: number;
  readonly runtime: Runtime;
  readonly listener: SmtpListener;
  close(): Promise<void>;
}

export async function startInProcessListener(relayPort: number, env: NodeJS.ProcessEnv = {}): Promise<InProcessListener> {
  const dataDir = await mkdtemp(join(tmpdir(), 'lacre-listener-'));
  const config = loadConfig({ env: { LACRE_DATABASE_DATA_DIR: dataDir, LACRE_RELAY_PORT: String(relayPort), LACRE_SMTP_LISTEN: '127.0.0.1:0', ...env } });
  const logger = createLogger('silent');
  const runtime = await openRuntime(config, logger);
  const listener = createSmtpListener(config, runtime.filter, logger);
  const { port } = await listener.listen();
  return {
    port,
    runtime,
    listener,
    async close() {
      await listener.close();
      await runtime.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
