/**
 * Every catalog is complete: each English msgid Lacre shows a user (t('...') in src/web and views/, and the
 * message of each WebError) has a translation in every locales/*.po, with the same {placeholders}. A new string
 * without its Spanish fails here; so does a language added with a gap.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { po } from 'gettext-parser';
import { catalogs, defaultLocalesDir, loadCatalogs } from '../../src/web/i18n.js';
import { findPackageRoot } from '../../src/util/package-root.js';

const ROOT = findPackageRoot();
const LITERAL = String.raw`'((?:[^'\\]|\\.)*)'`;
const PATTERNS = [
  new RegExp(String.raw`\bt\(\s*${LITERAL}`, 'g'),
  new RegExp(String.raw`new WebError\(\s*[\w.]+,\s*'[a-z-]+',\s*${LITERAL}`, 'g'),
  new RegExp(String.raw`\binvalid\(\s*${LITERAL}`, 'g'),
  // server.ts's table of the stack's own refusals: [code, 'Message.'].
  new RegExp(String.raw`\[\s*'[a-z-]+',\s*'([A-Z](?:[^'\\]|\\.)*)'\s*\]`, 'g'),
];

function files(dir: string, suffix: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return files(path, suffix);
    return entry.name.endsWith(suffix) ? [path] : [];
  });
}

function usedMsgids(): Set<string> {
  // i18n.ts itself only names the convention (t('...')) in its comments.
  const sources = [...files(join(ROOT, 'src/web'), '.ts').filter((file) => !file.endsWith('i18n.ts')), ...files(join(ROOT, 'views'), '.eta')];
  const found = new Set<string>();
  for (const file of sources) {
    const text = readFileSync(file, 'utf8');
    for (const pattern of PATTERNS) for (const match of text.matchAll(pattern)) found.add(match[1]!.replace(/\\(.)/g, '$1'));
  }
  return found;
}

const placeholders = (text: string) => [...text.matchAll(/\{([a-zA-Z_]+)\}/g)].map((m) => m[1]).sort();

describe('translations', () => {
  const used = usedMsgids();

  it('finds the strings it checks (the patterns still match the code)', () => {
    assert.ok(used.size > 100, `only ${used.size} strings found`);
    assert.ok(used.has('This confirmation link has already been used.'));
    assert.ok(used.has('Confirm your OpenPGP key for {email}'));
  });

  for (const file of readdirSync(defaultLocalesDir()).filter((name) => name.endsWith('.po'))) {
    it(`${file} translates every string, with the same placeholders`, () => {
      const translations = po.parse(readFileSync(join(defaultLocalesDir(), file))).translations[''] ?? {};
      const missing = [...used].filter((msgid) => !translations[msgid]?.msgstr[0]);
      assert.deepEqual(missing, [], `untranslated in ${file}`);
      const mismatched = [...used].filter((msgid) => JSON.stringify(placeholders(msgid)) !== JSON.stringify(placeholders(translations[msgid]!.msgstr[0]!)));
      assert.deepEqual(mismatched, [], `placeholders differ in ${file}`);
    });
  }

  it('chooses ?lang=, then Accept-Language by its weights, then the fallback; a region falls back to its language', () => {
    const { choose, languages } = catalogs();
    assert.deepEqual(languages, ['en', 'es']);
    assert.equal(choose('es', 'en', 'en'), 'es');
    assert.equal(choose('ES-mx', undefined, 'en'), 'es');
    assert.equal(choose('fr', 'de, es;q=0.5, en;q=0.4', 'en'), 'es');
    assert.equal(choose(undefined, 'es;q=0, en', 'es'), 'en');
    assert.equal(choose(undefined, 'fr, *', 'es'), 'es');
    assert.equal(choose(undefined, undefined, 'xx'), 'en');
  });

  it('fills placeholders and falls back to English for a language it does not have', () => {
    const { translator } = catalogs();
    assert.equal(translator('es')('Confirm your OpenPGP key for {email}', { email: 'a@b' }), 'Confirme su clave OpenPGP para a@b');
    assert.equal(translator('fr')('Confirm your OpenPGP key for {email}', { email: 'a@b' }), 'Confirm your OpenPGP key for a@b');
  });

  it('a language is one more .po file', () => {
    const dir = join(ROOT, 'locales');
    assert.deepEqual(loadCatalogs(dir).languages, ['en', ...readdirSync(dir).filter((f) => f.endsWith('.po')).map((f) => f.slice(0, -3)).sort()]);
  });
});
