/**
 * `lacre inbox token list|revoke` and what revoking does: the box refuses the token at its very next request
 * (the box reads the tokens at every request, in its own process too), the user's other tokens and data stay,
 * and blobs the token had reserved with POST ["PROCESSING"] are PENDING again.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { BlobMetadata } from '../../src/box/metadata.js';
import { openDatabase } from '../../src/db/open.js';
import type { DatabaseConfig } from '../../src/db/open.js';
import { databaseBackends, databaseEnv, openTestDatabase } from '../helpers/databases.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { markSecret } from '../helpers/leak-markers.js';
import { MX, TRUSTED, tokenHeader, withBox, type TestBox } from './server-box.js';
import { freePort } from '../helpers/ports.js';

const workDir = mkdtempSync(join(tmpdir(), 'lacre-token-revoke-'));
after(() => rmSync(workDir, { recursive: true, force: true }));

const idOf = (token: string) => createHash('sha256').update(token).digest('hex').slice(0, 12);
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function setFlags(box: TestBox, auth: string, user: string, id: string, flags: string[], headers: Record<string, string> = {}): Promise<Response> {
  return box.request('POST', `/blobs/${user}/${id}?namespace=${MX}`, { auth, body: JSON.stringify(flags), headers });
}

async function stateOf(box: TestBox, id: string): Promise<{ state: string; reserved_by: string | null }> {
  const [row] = await box.db.query<{ state: string; reserved_by: string | null }>('SELECT state, reserved_by FROM lacre_blobs WHERE blob_id = $1', [id]);
  return row!;
}


/** Runs `lacre inbox …` on one database; stdout as text. */
function inboxCli(config: DatabaseConfig, extraEnv: Record<string, string> = {}) {
  const env = { ...databaseEnv(config), LACRE_INCOMING_BOX_BLOBS_PATH: join(workDir, 'blobs'), LACRE_LOG_LEVEL: 'warn', ...extraEnv };
  return async (args: string[], input?: string) => {
    const result = await runLacre(['inbox', ...args], env, input);
    return { ...result, out: result.stdout.toString('utf8') };
  };
}

/** Adds token rows whose hashes share their first 12 hex digits (a collision no real pair of tokens will show). */
async function addCollidingTokens(config: DatabaseConfig, user: string): Promise<void> {
  const db = await openDatabase(config);
  try {
    for (const hash of [`abcdef012345a${'0'.repeat(51)}`, `abcdef012345b${'0'.repeat(51)}`]) {
      await db.query('INSERT INTO lacre_box_tokens (token_hash, user_uuid) VALUES ($1, $2)', [hash, user]);
    }
  } finally {
    await db.close();
  }
}

for (const backend of await databaseBackends()) {
  describe(`lacre inbox token list|revoke (${backend.name})`, () => {
    it('lists ids, never tokens; revokes by id, by token, from stdin and --all; refuses unknown and ambiguous ones; touches nothing else', { timeout: 180_000 }, async () => {
      const database = await openTestDatabase(backend);
      await database.db.close();
      const lacre = inboxCli(database.config);
      try {
        const alice = (await lacre(['user', 'add', 'alice@example.org'])).out.trim();
        assert.equal((await lacre(['user', 'add', 'alias@example.org', '--user', alice])).code, 0);
        const bob = (await lacre(['user', 'add', 'bob@example.org'])).out.trim();
        const tokens: string[] = [];
        for (let i = 0; i < 5; i++) tokens.push((await lacre(['token', 'create', 'alice@example.org'])).out.trim());
        const bobToken = (await lacre(['token', 'create', bob])).out.trim();
        for (const token of [...tokens, bobToken]) markSecret(token);
        const usersBefore = (await lacre(['user', 'list', '--json'])).out;

        const listed = await lacre(['token', 'list', 'ALIAS@example.org']);
        assert.equal(listed.code, 0, listed.stderr);
        const lines = listed.out.trim().split('\n');
        assert.equal(lines.length, 5);
        for (const line of lines) assert.match(line, /^[0-9a-f]{12} {2}\S+$/);
        assert.deepEqual(lines.map((line) => line.split('  ')[0]).sort(), tokens.map(idOf).sort(), 'each id is the start of a token\'s SHA-256');
        for (const token of tokens) assert.ok(!listed.out.includes(token), 'no token is shown');
        const json = JSON.parse((await lacre(['token', 'list', alice, '--json'])).out) as { id: string; created_at: string }[];
        assert.deepEqual(json.map((entry) => entry.id).sort(), tokens.map(idOf).sort());
        for (const entry of json) assert.match(entry.created_at, ISO);
        assert.deepEqual(Object.keys(json[0]!).sort(), ['created_at', 'id']);

        // By the id list shows, by a longer prefix of the hash, by the token, by the token on stdin.
        const byId = await lacre(['token', 'revoke', 'alice@example.org', idOf(tokens[0]!)]);
        assert.equal(byId.code, 0, byId.stderr);
        assert.match(byId.out, new RegExp(`^revoked ${idOf(tokens[0]!)} {2}\\S+\\n$`));
        const longer = createHash('sha256').update(tokens[1]!).digest('hex').slice(0, 20).toUpperCase();
        assert.match((await lacre(['token', 'revoke', alice, longer])).out, new RegExp(`^revoked ${idOf(tokens[1]!)} `));
        const byToken = await lacre(['token', 'revoke', alice, tokens[2]!]);
        assert.match(byToken.out, new RegExp(`^revoked ${idOf(tokens[2]!)} `));
        assert.ok(!byToken.out.includes(tokens[2]!), 'the token is not printed back');
        assert.match((await lacre(['token', 'revoke', alice, '-'], `${tokens[3]!}\n`)).out, new RegExp(`^revoked ${idOf(tokens[3]!)} `));
        assert.deepEqual((await lacre(['token', 'list', alice])).out.trim().split('\n').map((line) => line.split('  ')[0]), [idOf(tokens[4]!)]);

        // Refused, exit 1: an unknown id, a token that is not the user's (bob's), a revoked one, no choice made.
        const unknownId = await lacre(['token', 'revoke', alice, 'ffffffffffff']);
        assert.equal(unknownId.code, 1);
        assert.match(unknownId.stderr, /user \S+ has no token ffffffffffff/);
        const othersToken = await lacre(['token', 'revoke', alice, bobToken]);
        assert.equal(othersToken.code, 1);
        assert.match(othersToken.stderr, /the token given is not one of user \S+'s tokens/);
        assert.ok(!othersToken.stderr.includes(bobToken), 'the error does not repeat the token');
        assert.equal((await lacre(['token', 'revoke', alice, idOf(tokens[0]!)])).code, 1, 'revoked already');
        const neither = await lacre(['token', 'revoke', alice]);
        assert.equal(neither.code, 1);
        assert.match(neither.stderr, /name one token .*or give --all/);
        assert.equal((await lacre(['token', 'revoke', alice, idOf(tokens[4]!), '--all'])).code, 1, 'a token and --all');
        assert.match((await lacre(['token', 'list', 'nobody@example.org'])).stderr, /no box user nobody@example\.org/);
        const swapped = await lacre(['token', 'revoke', bobToken, alice]);
        assert.equal(swapped.code, 1);
        assert.match(swapped.stderr, /no box user \(not an address or a user id\)/);
        assert.ok(!swapped.stderr.includes(bobToken), 'a token given where the user goes is not repeated either');

        // Two hashes that share their first 12 digits: list tells them apart with more digits; the 12 are ambiguous.
        await addCollidingTokens(database.config, alice);
        const colliding = (await lacre(['token', 'list', alice])).out;
        assert.match(colliding, /^abcdef012345a {2}/m);
        assert.match(colliding, /^abcdef012345b {2}/m);
        const ambiguous = await lacre(['token', 'revoke', alice, 'abcdef012345']);
        assert.equal(ambiguous.code, 1);
        assert.match(ambiguous.stderr, /token id abcdef012345 is ambiguous: 2 tokens of user \S+ begin with it/);
        assert.match((await lacre(['token', 'revoke', alice, 'abcdef012345a'])).out, /^revoked abcdef012345a {2}/);

        const all = await lacre(['token', 'revoke', 'alice@example.org', '--all']);
        assert.equal(all.code, 0, all.stderr);
        assert.deepEqual(all.out.trim().split('\n').map((line) => line.split('  ')[0]).sort(), ['revoked abcdef012345', `revoked ${idOf(tokens[4]!)}`].sort());
        assert.equal((await lacre(['token', 'list', alice])).out, '');
        assert.equal((await lacre(['token', 'revoke', alice, '--all'])).out, 'no tokens to revoke\n');

        assert.equal((await lacre(['user', 'list', '--json'])).out, usersBefore, 'addresses are untouched');
        assert.deepEqual((await lacre(['token', 'list', bob])).out.trim().split('\n').map((line) => line.split('  ')[0]), [idOf(bobToken)], "bob's token stays");
      } finally {
        await database.cleanup();
      }
    });

    it('the box refuses a revoked token at its next request, takes back what it reserved, and keeps the rest', () =>
      withBox(backend, { processing_threshold_seconds: 600 }, async (box) => {
        const { id: alice, token: phone, auth: phoneAuth } = await box.createUser('alice@example.org');
        const laptop = (await box.users.createToken(alice)).token;
        const laptopAuth = tokenHeader(alice, laptop);
        const bob = await box.createUser('bob@example.org');
        for (const id of ['m1', 'm2', 'm3', 'm4']) assert.equal((await box.deliver(alice, id, `sealed ${id}`)).status, 200);
        assert.equal((await box.deliver(bob.id, 'b1', 'sealed b1')).status, 200);
        assert.equal((await setFlags(box, phoneAuth, alice, 'm1', ['PROCESSING'])).status, 200);
        assert.equal((await setFlags(box, laptopAuth, alice, 'm2', ['PROCESSING'])).status, 200);
        const reserved = await box.request('POST', `/blobs/${alice}/m3/reserve?namespace=${MX}`, { auth: phoneAuth });
        const { reservation } = (await reserved.json()) as { reservation: string };
        assert.equal((await setFlags(box, phoneAuth, alice, 'm4', ['PROCESSING'])).status, 200);
        assert.equal((await setFlags(box, phoneAuth, alice, 'm4', ['PROCESSED'])).status, 200);
        assert.equal((await box.request('GET', `/blobs/${alice}/?namespace=${MX}`, { auth: phoneAuth })).status, 200);

        const revoked = await box.users.revokeTokens('alice@example.org', { reference: idOf(phone) });
        assert.deepEqual(
          revoked.tokens.map((t) => t.id),
          [idOf(phone)],
        );
        assert.equal(revoked.releasedBlobs, 1, 'm1, which the phone had reserved with ["PROCESSING"]');

        assert.equal((await box.request('GET', `/blobs/${alice}/?namespace=${MX}`, { auth: phoneAuth })).status, 401, 'the very next request');
        assert.equal((await box.request('GET', `/blobs/${alice}/m1?namespace=${MX}`, { auth: phoneAuth })).status, 401);
        assert.equal((await box.request('GET', `/blobs/${alice}/?namespace=${MX}`, { auth: laptopAuth })).status, 200, 'the other token works');
        assert.equal((await box.request('GET', `/blobs/${bob.id}/?namespace=${MX}`, { auth: bob.auth })).status, 200, "another user's too");

        assert.deepEqual(await stateOf(box, 'm1'), { state: 'PENDING', reserved_by: null }, 'released at once, not after the threshold');
        // A reservation by the phone that passed ownerOnly just before the revoke, and reaches the database after it.
        const [{ namespace }] = (await box.db.query<{ namespace: string }>(`SELECT namespace FROM lacre_blobs WHERE blob_id = 'm1'`)) as [{ namespace: string }];
        const late = await new BlobMetadata(box.db, 600).reserveFor({ user: alice, namespace, id: 'm1' }, createHash('sha256').update(phone).digest('hex'));
        assert.equal(late, 'busy', 'a revoked credential reserves nothing');
        assert.equal((await stateOf(box, 'm1')).state, 'PENDING');
        assert.equal((await setFlags(box, laptopAuth, alice, 'm1', ['PROCESSING'])).status, 200, 'the other device takes it now');
        assert.equal((await stateOf(box, 'm2')).reserved_by, createHash('sha256').update(laptop).digest('hex'), "the laptop's reservation stays");
        assert.equal((await stateOf(box, 'm4')).state, 'PROCESSED');
        // A …/reserve reservation is held by its own token, which any of the user's credentials may present.
        assert.equal((await setFlags(box, laptopAuth, alice, 'm3', ['PROCESSED'], { 'x-reservation': reservation })).status, 200);
        const [{ count }] = (await box.db.query<{ count: number }>('SELECT count(*)::int AS count FROM lacre_blobs')) as [{ count: number }];
        assert.equal(count, 5, 'no blob is deleted');
        assert.equal(await box.users.userFor('alice@example.org'), alice);
        assert.equal(await box.users.verifyToken(bob.id, bob.token), true);
      }),
    );

    it(
      'a reservation in flight when the token is revoked is released once it commits',
      { skip: backend.name !== 'postgres' && 'needs two connections: the embedded database has one' },
      () =>
        withBox(backend, { processing_threshold_seconds: 600 }, async (box) => {
          const { id: alice, token: phone } = await box.createUser('alice@example.org');
          assert.equal((await box.deliver(alice, 'm1', 'sealed m1')).status, 200);
          const hash = createHash('sha256').update(phone).digest('hex');
          // What reserveFor does, held open: the token FOR SHARE, the blob PROCESSING, then a while before commit.
          const reserving = box.db.queryInTransaction([
            { sql: 'SELECT 1 FROM lacre_box_tokens WHERE token_hash = $1 FOR SHARE', params: [hash] },
            { sql: `UPDATE lacre_blobs SET state = 'PROCESSING', reserved_at = now(), reserved_by = $1 WHERE blob_id = 'm1'`, params: [hash] },
            { sql: 'SELECT pg_sleep(0.6)' },
          ]);
          await new Promise((resolve) => setTimeout(resolve, 200));
          const revoked = await box.users.revokeTokens(alice, { reference: phone });
          await reserving;
          assert.equal(revoked.releasedBlobs, 1, 'the revoke waited for the reservation and released it');
          assert.deepEqual(await stateOf(box, 'm1'), { state: 'PENDING', reserved_by: null });
        }),
    );

    it(
      backend.name === 'postgres'
        ? 'a revoked token gets 401 from a running lacre inbox serve (its own process) at the next request'
        : 'refuses to revoke while lacre inbox serve holds the embedded database, and says to stop it',
      { timeout: 120_000 },
      async () => {
        const database = await openTestDatabase(backend);
        await database.db.close();
        const port = await freePort();
        const boxEnv = {
          ...databaseEnv(database.config),
          LACRE_INCOMING_BOX_LISTEN: `127.0.0.1:${port}`,
          LACRE_INCOMING_BOX_BLOBS_PATH: join(workDir, `blobs-${backend.name}`),
          LACRE_INCOMING_BOX_TRUSTED_TOKENS: TRUSTED,
        };
        const lacre = inboxCli(database.config, { LACRE_INCOMING_BOX_BLOBS_PATH: boxEnv.LACRE_INCOMING_BOX_BLOBS_PATH });
        let box: LacreServer | undefined;
        try {
          const alice = (await lacre(['user', 'add', 'alice@example.org'])).out.trim();
          const [phone, laptop] = [(await lacre(['token', 'create', alice])).out.trim(), (await lacre(['token', 'create', alice])).out.trim()] as [string, string];
          markSecret(phone);
          markSecret(laptop);
          box = await LacreServer.start(boxEnv, { command: ['inbox', 'serve'], readyMessage: 'incoming box is ready' });
          const list = (token: string) => fetch(`http://127.0.0.1:${port}/blobs/${alice}/?namespace=${MX}`, { headers: { authorization: tokenHeader(alice, token) } });
          assert.equal((await list(phone)).status, 200);

          const revoked = await lacre(['token', 'revoke', alice, idOf(phone)]);
          if (backend.name === 'embedded') {
            assert.equal(revoked.code, 1);
            assert.match(revoked.stderr, /is in use by process \d+: the embedded database allows one process at a time \(stop it/);
            assert.equal((await list(phone)).status, 200, 'nothing was revoked');
            return;
          }
          assert.equal(revoked.code, 0, revoked.stderr);
          assert.equal((await list(phone)).status, 401, 'refused at the next request');
          assert.equal((await list(laptop)).status, 200, 'the other token of the same user still works');
        } finally {
          await box?.stop();
          await database.cleanup();
        }
      },
    );
  });
}
