/**
 * The web page's routes over HTTP on the real listener (startWebServer), on both database backends: status
 * codes, languages, headers, error pages, and that following a confirmation link (GET) changes nothing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log/logger.js';
import { catalogs } from '../../src/web/i18n.js';
import { PAGE_CSP } from '../../src/web/page.js';
import { databaseBackends, openTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { DOMAIN, linkFromMail, startPageServer, type PageServer } from './page-fixture.js';

const es = catalogs().translator('es');

interface Page {
  status: number;
  headers: Headers;
  html: string;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Page> {
  const response = await fetch(url, { headers, redirect: 'manual' });
  return { status: response.status, headers: response.headers, html: await response.text() };
}

async function post(url: string, body: URLSearchParams | FormData, headers: Record<string, string> = {}): Promise<Page> {
  const response = await fetch(url, { method: 'POST', body, headers, redirect: 'manual' });
  return { status: response.status, headers: response.headers, html: await response.text() };
}

function htmlLang(page: Page): string | undefined {
  return /<html lang="([^"]+)">/.exec(page.html)?.[1];
}

function assertErrorPage(page: Page, status: number, lang: string): void {
  assert.equal(page.status, status, page.html);
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  assert.equal(page.headers.get('content-security-policy'), PAGE_CSP);
  assert.equal(htmlLang(page), lang);
  assert.match(page.html, /<div class="error" role="alert">/);
}

for (const backend of await databaseBackends()) {
  describe(`the web page (${backend.name})`, () => {
    let home: GpgHome;
    let alice: GpgKey;
    let sink: SmtpSink;
    let database: TestDatabase;
    let server: PageServer;
    const email = `alice@${DOMAIN}`;

    before(async () => {
      home = await createGpgHome();
      alice = await generateKey(home, { email });
      sink = await SmtpSink.start();
      database = await openTestDatabase(backend);
      server = await startPageServer(database.db, sink);
    });
    after(async () => {
      await server?.close();
      await database?.cleanup();
      await sink?.stop();
      await home?.remove();
    });

    async function keyState(): Promise<unknown[]> {
      const keys = await database.db.query('select email, fingerprint, status from lacre_keys order by id');
      const requests = await database.db.query('select action, used_at from lacre_key_requests order by id');
      return [keys, requests];
    }

    it('serves the start page in ?lang=, else Accept-Language, with its CSP and a long-cached stylesheet', async () => {
      const spanish = await get(`${server.base}/`, { 'accept-language': 'es-AR,es;q=0.9,en;q=0.5' });
      assert.equal(spanish.status, 200);
      assert.equal(htmlLang(spanish), 'es');
      assert.ok(spanish.html.includes(`<h1>${es('Publish your OpenPGP key')}</h1>`));
      assert.match(spanish.html, /<input type="hidden" name="lang" value="es">/);
      assert.equal(spanish.headers.get('content-security-policy'), PAGE_CSP);
      assert.equal(spanish.headers.get('referrer-policy'), 'no-referrer');

      const english = await get(`${server.base}/?lang=en`, { 'accept-language': 'es' });
      assert.equal(htmlLang(english), 'en');
      assert.ok(english.html.includes('<h1>Publish your OpenPGP key</h1>'));
      assert.match(english.html, /<a href="\/\?lang=es" hreflang="es" lang="es">/);

      const href = /<link rel="stylesheet" href="([^"]+)">/.exec(english.html)?.[1];
      assert.ok(href?.startsWith('/static/style.css?v='));
      const css = await fetch(`${server.base}${href}`);
      assert.equal(css.status, 200);
      assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
      assert.match(css.headers.get('cache-control') ?? '', /max-age=31536000/);
      assert.match(await css.text(), /:focus-visible/);
    });

    it('answers a bad upload with an HTML error page in the form\u2019s language and the right status', async () => {
      assertErrorPage(await post(`${server.base}/upload`, new URLSearchParams({ key: 'hello', lang: 'es' })), 400, 'es');
      const empty = await post(`${server.base}/upload`, new URLSearchParams({ key: '  ', lang: 'es' }));
      assertErrorPage(empty, 400, 'es');
      assert.ok(empty.html.includes(es('Paste your public key or choose a key file.')));
      const badStyle = new URLSearchParams({ key: alice.publicArmored, style: 'fancy', lang: 'en' });
      assertErrorPage(await post(`${server.base}/upload`, badStyle), 400, 'en');
      const secret = await post(`${server.base}/upload`, new URLSearchParams({ key: alice.secretArmored, lang: 'en' }));
      assertErrorPage(secret, 400, 'en');
    });

    it('refuses a form or file over 64 KiB with 413', async () => {
      const big = 'x'.repeat(70 * 1024);
      assertErrorPage(await post(`${server.base}/upload`, new URLSearchParams({ key: big, lang: 'en' })), 413, 'en');
      const form = new FormData();
      form.append('lang', 'es');
      form.append('keyfile', new Blob([big]), 'key.asc');
      assertErrorPage(await post(`${server.base}/upload`, form), 413, 'es');
      const field = new FormData();
      field.append('lang', 'en');
      field.append('key', big);
      assertErrorPage(await post(`${server.base}/upload`, field), 413, 'en');
      assert.deepEqual(await keyState(), [[], []]);
    });

    it('publishes a key: a file upload mails a link; its GET changes nothing; its POST confirms, once', async () => {
      const form = new FormData();
      form.append('lang', 'es');
      form.append('key', '');
      form.append('keyfile', new Blob([alice.publicArmored], { type: 'application/pgp-keys' }), 'alice.asc');
      form.append('email', email);
      form.append('style', 'inline');
      const uploaded = await post(`${server.base}/upload`, form);
      assert.equal(uploaded.status, 202, uploaded.html);
      assert.ok(uploaded.html.includes(es('Check your mail')));
      assert.ok(uploaded.html.includes(alice.fingerprint));

      const link = await linkFromMail(sink, home, alice, email, server.base);
      const pending = await keyState();
      for (let visit = 0; visit < 2; visit++) {
        const offer = await get(link, { 'accept-language': 'en' });
        assert.equal(offer.status, 200);
        assert.equal(htmlLang(offer), 'es', 'the language the upload was made in');
        assert.ok(offer.html.includes(alice.fingerprint));
        assert.equal(offer.headers.get('cache-control'), 'no-store');
        assert.match(offer.html, new RegExp(`<form method="post" action="${new URL(link).pathname}">`));
      }
      assert.deepEqual(await keyState(), pending, 'a GET of the link changes nothing');
      const waiting = await get(`${server.base}/status?email=${encodeURIComponent(email)}&lang=es`);
      assert.ok(waiting.html.includes(es('Waiting for confirmation')));

      const confirmed = await post(link, new URLSearchParams({ lang: 'es' }));
      assert.equal(confirmed.status, 200, confirmed.html);
      assert.ok(confirmed.html.includes(es('Key published')));
      const status = await get(`${server.base}/status?email=${encodeURIComponent(email)}`);
      assert.equal(status.status, 200);
      assert.ok(status.html.includes('<dd>Published</dd>'));
      assert.ok(status.html.includes(alice.fingerprint));

      const mails = sink.messages.length;
      const again = await post(`${server.base}/upload`, new URLSearchParams({ key: alice.publicArmored, lang: 'es' }));
      assert.equal(again.status, 200, again.html);
      assert.ok(again.html.includes(es('This key is already published')));
      assert.equal(sink.messages.length, mails, 'no mail for a key already published');

      assertErrorPage(await post(link, new URLSearchParams({ lang: 'en' })), 410, 'en');
      assertErrorPage(await get(link, { 'accept-language': 'es' }), 410, 'es');
    });

    it('removes a key only when the mailed link is confirmed', async () => {
      const asked = await post(`${server.base}/delete`, new URLSearchParams({ email, lang: 'en' }));
      assert.equal(asked.status, 202, asked.html);
      const link = await linkFromMail(sink, home, alice, email, server.base);
      const before = await keyState();
      const offer = await get(link);
      assert.ok(offer.html.includes('Remove this key?'));
      assert.deepEqual(await keyState(), before);
      const removed = await post(link, new URLSearchParams({ lang: 'en' }));
      assert.equal(removed.status, 200, removed.html);
      assert.ok(removed.html.includes('Key removed'));
      const status = await get(`${server.base}/status?email=${encodeURIComponent(email)}&lang=en`);
      assert.ok(status.html.includes('<dd>No key</dd>'));
    });

    it('answers unknown links, missing addresses and unknown pages with an error status', async () => {
      assertErrorPage(await get(`${server.base}/confirm/${randomBytes(32).toString('base64url')}?lang=es`), 404, 'es');
      assertErrorPage(await post(`${server.base}/confirm/${randomBytes(32).toString('base64url')}`, new URLSearchParams({ lang: 'en' })), 404, 'en');
      assertErrorPage(await get(`${server.base}/confirm/short`), 404, 'en');
      assertErrorPage(await get(`${server.base}/status?lang=en`), 400, 'en');
      assertErrorPage(await get(`${server.base}/status?email=not-an-address&lang=en`), 400, 'en');
      assertErrorPage(await post(`${server.base}/delete`, new URLSearchParams({ lang: 'en' })), 400, 'en');
      const wrongMethod = await get(`${server.base}/upload?lang=es`);
      assertErrorPage(wrongMethod, 405, 'es');
      assert.equal(wrongMethod.headers.get('allow'), 'POST');
      assert.equal(wrongMethod.headers.get('content-language'), 'es');
    });
  });
}

describe('the web page\u2019s per-client limit', () => {
  it('answers a state-changing form beyond web.requests_per_ip_per_hour with 429 and Retry-After', async () => {
    const [backend] = await databaseBackends();
    const sink = await SmtpSink.start();
    const database = await openTestDatabase(backend!);
    const server = await startPageServer(database.db, sink, { LACRE_WEB_REQUESTS_PER_IP_PER_HOUR: '2' });
    try {
      for (let i = 0; i < 2; i++) assert.equal((await post(`${server.base}/upload`, new URLSearchParams({ key: 'x', lang: 'en' }))).status, 400);
      const limited = await post(`${server.base}/delete`, new URLSearchParams({ email: `bob@${DOMAIN}`, lang: 'es' }));
      assertErrorPage(limited, 429, 'es');
      assert.match(limited.headers.get('retry-after') ?? '', /^\d+$/);
      assert.equal((await get(`${server.base}/?lang=en`)).status, 200, 'reading is not limited');
    } finally {
      await server.close();
      await database.cleanup();
      await sink.stop();
    }
  });
});

describe('the web page without its database', () => {
  it('answers 503 with an error page, and no log line holds the link\u2019s token', async () => {
    const [backend] = await databaseBackends();
    const sink = await SmtpSink.start();
    const database = await openTestDatabase(backend!);
    const lines: string[] = [];
    const logStream = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString('utf8')), done()) });
    const server = await startPageServer(database.db, sink, {}, createLogger('debug', logStream));
    const token = randomBytes(32).toString('base64url');
    try {
      await database.db.close();
      assertErrorPage(await get(`${server.base}/confirm/${token}?lang=es`), 503, 'es');
      assertErrorPage(await post(`${server.base}/confirm/${token}`, new URLSearchParams({ lang: 'en' })), 503, 'en');
      assertErrorPage(await get(`${server.base}/status?email=${encodeURIComponent(`bob@${DOMAIN}`)}`), 503, 'en');
      assert.deepEqual(lines.filter((line) => line.includes(token)), []);
    } finally {
      await server.close();
      await database.cleanup();
      await sink.stop();
    }
  });
});
