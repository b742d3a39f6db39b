/**
 * A PostgreSQL server that is reachable but does not answer: RCPT for an address not in the key cache gets
 * 451 4.3.0 once database.query_timeout_seconds has passed, as for a database that is down (SMTP and LMTP).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { RawSmtpClient } from '../helpers/smtp-client.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { databaseBackends } from '../helpers/databases.js';

const postgres = (await databaseBackends()).find((backend) => backend.name === 'postgres');

for (const lmtp of [false, true]) {
  describe(`RCPT while PostgreSQL does not answer (${lmtp ? 'LMTP' : 'SMTP'})`, { skip: postgres ? false : 'needs a PostgreSQL server' }, () => {
    const adminUrl = postgres?.adminUrl ?? '';
    const name = `lacre_hang_${process.pid}_${lmtp ? 'lmtp' : 'smtp'}`;
    let proxy: TcpProxy;
    let server: LacreServer;

    before(async () => {
      await adminQuery(adminUrl, `CREATE DATABASE ${name}`);
      const direct = new URL(adminUrl);
      direct.pathname = `/${name}`;
      const migrated = await runLacre(['migrate'], { LACRE_DATABASE_URL: direct.toString() });
      assert.equal(migrated.code, 0, migrated.stderr);
      proxy = new TcpProxy(direct.hostname, Number(direct.port || 5432));
      await proxy.start();
      const proxied = new URL(direct);
      proxied.port = String(proxy.port);
      server = await LacreServer.start({
        LACRE_DATABASE_URL: proxied.toString(),
        LACRE_DATABASE_QUERY_TIMEOUT_SECONDS: '1',
        LACRE_SMTP_LMTP: String(lmtp),
        LACRE_HTTP_ENABLED: 'false',
      });
    });

    after(async () => {
      await server?.stop();
      await proxy?.stop();
      await adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    });

    it('answers 451 4.3.0 instead of hanging', async () => {
      proxy.stall();
      const { client } = await RawSmtpClient.connect(server.port);
      try {
        assert.match(await client.command(`${lmtp ? 'LHLO' : 'EHLO'} postfix.example`), /^250/);
        assert.match(await client.command('MAIL FROM:<sender@example.org>'), /^250/);
        const started = Date.now();
        assert.match(await client.command('RCPT TO:<uncached@example.org>'), /^451 4\.3\.0 /);
        // database.query_timeout_seconds = 1 (set above) is what answered, not the 10 s default.
        const elapsedMs = Date.now() - started;
        assert.ok(elapsedMs >= 900 && elapsedMs < 5_000, `RCPT answered after ${elapsedMs} ms`);
      } finally {
        await client.close();
      }
    });
  });
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}
