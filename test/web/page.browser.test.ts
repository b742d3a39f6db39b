/**
 * The page in a real browser (Debian's chromium, driven by playwright-core), end to end in English and in
 * Spanish: upload a gpg-made key → the confirmation mail is caught by a local SMTP sink → gpg decrypts it → the
 * link is followed → confirm → the status page shows the key published. Every page is checked by axe-core (no
 * serious or critical violation); any console message of type error, or page error, fails the test. Screenshots
 * go to test-output/page-browser/ at the repository root (printed as the test runs).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { findPackageRoot } from '../../src/util/package-root.js';
import { catalogs, type Translate } from '../../src/web/i18n.js';
import { databaseBackends, openTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, type GpgHome } from '../helpers/gpg.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { DOMAIN, linkFromMail, startPageServer, type PageServer } from './page-fixture.js';

const CHROMIUM = '/usr/bin/chromium';
const OUTPUT = join(findPackageRoot(), 'test-output', 'page-browser');
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[] }[];
}

/** Problems the browser reported on a page: console errors and uncaught page errors. */
function watch(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  return problems;
}

/** axe-core on the page as it is now: no serious or critical violation, and a screenshot for the record. */
async function check(page: Page, name: string, problems: string[]): Promise<void> {
  await page.screenshot({ path: join(OUTPUT, `${name}.png`), fullPage: true });
  // Not page.addScriptTag: the page's CSP (rightly) refuses inline scripts; DevTools evaluation is exempt.
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(): Promise<{ violations: AxeViolation[] }> } }).axe;
    return (await axe.run()).violations;
  });
  const grave = violations.filter((violation) => violation.impact === 'serious' || violation.impact === 'critical');
  assert.deepEqual(
    grave.map((violation) => `${violation.id} (${violation.impact}): ${violation.help} at ${violation.nodes.map((node) => node.target.join(' ')).join(', ')}`),
    [],
    `axe on ${name}`,
  );
  assert.deepEqual(problems, [], `browser errors on ${name}`);
}

/** The keyboard reaches the skip link first, then the page's own links and fields, each with a visible outline. */
async function assertFocusVisible(page: Page, t: Translate): Promise<void> {
  const focused = async () =>
    page.evaluate(() => {
      const element = document.activeElement as HTMLElement;
      const style = getComputedStyle(element);
      return { text: element.textContent?.trim() ?? '', outline: style.outlineStyle, width: parseFloat(style.outlineWidth), visible: element.getBoundingClientRect().width > 0 };
    });
  await page.keyboard.press('Tab');
  const skip = await focused();
  assert.equal(skip.text, t('Skip to content'));
  const stops = [skip];
  for (let tab = 0; tab < 4; tab++) {
    await page.keyboard.press('Tab');
    stops.push(await focused());
  }
  for (const stop of stops) assert.ok(stop.visible && stop.outline !== 'none' && stop.width >= 2, `focus visible on "${stop.text}": ${JSON.stringify(stop)}`);
}

const unavailable = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is missing (apt-get install chromium)`;

describe('the web page in a browser', { skip: unavailable }, () => {
  let browser: Browser;
  let home: GpgHome;
  let sink: SmtpSink;
  let database: TestDatabase;
  let server: PageServer;

  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    console.log(`screenshots: ${OUTPUT}`);
    home = await createGpgHome();
    sink = await SmtpSink.start();
    const [backend] = await databaseBackends();
    database = await openTestDatabase(backend!);
    server = await startPageServer(database.db, sink);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    await database?.cleanup();
    await sink?.stop();
    await home?.remove();
  });

  const journeys: { lang: string; locale: string; user: string; paste: boolean }[] = [
    { lang: 'en', locale: 'en-US', user: 'alice', paste: true },
    { lang: 'es', locale: 'es-ES', user: 'carmen', paste: false },
  ];

  for (const { lang, locale, user, paste } of journeys) {
    it(`takes a key from upload to published (${lang}, ${paste ? 'pasted' : 'file'})`, async () => {
      const t: Translate = catalogs().translator(lang);
      const email = `${user}@${DOMAIN}`;
      const key = await generateKey(home, { email });
      const context = await browser.newContext({ locale, extraHTTPHeaders: { 'accept-language': locale } });
      const page = await context.newPage();
      const problems = watch(page);
      try {
        await page.goto(`${server.base}/`);
        assert.equal(await page.getAttribute('html', 'lang'), lang, 'Accept-Language chooses the language');
        assert.equal(await page.locator('h1').textContent(), t('Publish your OpenPGP key'));
        if (lang !== 'en') assert.notEqual(t('Publish your OpenPGP key'), 'Publish your OpenPGP key', `the ${lang} catalog translates the page`);
        await check(page, `${lang}-1-start`, problems);
        await assertFocusVisible(page, t);

        if (paste) await page.getByLabel(t('Public key (ASCII-armored)')).fill(key.publicArmored);
        else await page.getByLabel(t('Key file')).setInputFiles({ name: `${user}.asc`, mimeType: 'application/pgp-keys', buffer: Buffer.from(key.publicArmored) });
        await page.getByLabel(t('Email address (optional)')).fill(email);
        await page.getByRole('button', { name: t('Upload key') }).click();
        await page.waitForLoadState();
        assert.equal(await page.locator('h1').textContent(), t('Check your mail'));
        assert.ok((await page.locator('main').textContent())?.includes(key.fingerprint));
        await check(page, `${lang}-2-uploaded`, problems);

        const link = await linkFromMail(sink, home, key, email, server.base);
        await page.goto(link);
        assert.equal(await page.getAttribute('html', 'lang'), lang);
        assert.equal(await page.locator('h1').textContent(), t('Publish this key?'));
        await check(page, `${lang}-3-confirm`, problems);

        await page.getByRole('button', { name: t('Publish key') }).click();
        await page.waitForLoadState();
        assert.equal(await page.locator('h1').textContent(), t('Key published'));
        await check(page, `${lang}-4-published`, problems);

        await page.getByRole('link', { name: t('See the status of {email}', { email }) }).click();
        await page.waitForLoadState();
        assert.equal(await page.locator('h1').textContent(), t('Key status'));
        assert.equal(await page.locator('dd', { hasText: t('Published') }).count(), 1);
        assert.ok((await page.locator('main').textContent())?.includes(key.fingerprint));
        await check(page, `${lang}-5-status`, problems);

        await page.goto(link);
        assert.equal(await page.locator('[role="alert"]').count(), 1, 'a used link says so');
        assert.equal(await page.locator('h1').textContent(), t('That did not work'));
        // The browser logs the refusal of the page itself (410 Gone); that is the expected outcome here.
        const gone = problems.findIndex((problem) => /the server responded with a status of 410/.test(problem));
        assert.notEqual(gone, -1, `the 410 is seen: ${problems.join('; ')}`);
        problems.splice(gone, 1);
        await check(page, `${lang}-6-used-link`, problems);
      } finally {
        await context.close();
      }
    });
  }
});
