import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import type { Database } from './db/types.js';
import { openDatabase } from './db/open.js';
import { assertMigrated, migrate } from './db/migrate.js';
import { createKeyDirectory } from './keys/directory.js';
import type { KeyDirectory } from './keys/types.js';
import { MessageFilter } from './filter/filter.js';
import type { Downstream } from './filter/pipeline.js';
import { Relay } from './smtp/reinject.js';
import { HttpBoxDownstream } from './incoming/delivery.js';
import { createBoxUserDirectory } from './incoming/users.js';

export interface Runtime {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly keys: KeyDirectory;
  readonly relay: Relay;
  /** Present when incoming_box.url is set. */
  readonly box: HttpBoxDownstream | undefined;
  filterTo(downstream: Downstream): MessageFilter;
  readonly filter: MessageFilter;
  close(): Promise<void>;
}

/**
 * Opens the database (migrating the embedded one by itself; a PostgreSQL server must have been migrated
 * with `lacre migrate`), the key directory and the relay pool.
 */
export async function openRuntime(config: Config, logger: Logger): Promise<Runtime> {
  const db = await openDatabase(config.database, logger);
  try {
    if (db.kind === 'embedded') {
      const applied = await migrate(db);
      if (applied.length > 0) logger.info({ applied }, 'embedded database migrated');
    } else {
      await assertMigrated(db);
    }
  } catch (error) {
    await db.close();
    throw error;
  }
  const keys = await createKeyDirectory(db, config.keys, logger);
  const relay = new Relay(config.relay, config.smtp.hostname, logger);
  const box = config.incoming_box.url ? new HttpBoxDownstream(config.incoming_box) : undefined;
  const boxUsers = box ? createBoxUserDirectory(db, config.keys) : undefined;
  const filterTo = (downstream: Downstream) => new MessageFilter(keys, { relay: downstream, box }, config, boxUsers);
  return {
    config,
    logger,
    db,
    keys,
    relay,
    box,
    filterTo,
    filter: filterTo(relay),
    async close() {
      relay.close();
      box?.close();
      await keys.close();
      await db.close();
    },
  };
}
