/**
 * Translations for everything users read: the page, the API's messages and every mail Lacre sends. Catalogs are
 * gettext .po files in `locales/` (one per language, named by its tag: `es.po`); English is the source language
 * (the msgids), so it needs none. Adding a language is adding one file: copy `locales/es.po` to `xx.po`, translate
 * each msgstr, and restart. A msgid is always a literal at the call site (`t('...')`), so that
 * test/web/i18n.test.ts can find every one and check each catalog holds them all.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { po } from 'gettext-parser';
import Gettext from 'node-gettext';
import { findPackageRoot } from '../util/package-root.js';

export const SOURCE_LANGUAGE = 'en';
const DOMAIN = 'lacre';

/** Translates one msgid, filling `{name}` placeholders from `values`. */
export type Translate = (msgid: string, values?: Readonly<Record<string, string | number>>) => string;

export interface Catalogs {
  /** The languages there are catalogs for, English first. */
  readonly languages: readonly string[];
  translator(lang: string): Translate;
  /** The language to answer in: `?lang=`, else the best of Accept-Language, else `fallback`. */
  choose(queryLang: string | undefined, acceptLanguage: string | undefined, fallback: string): string;
}

export function defaultLocalesDir(): string {
  return join(findPackageRoot(), 'locales');
}

let loaded: Catalogs | undefined;

/** The catalogs of `locales/`, read once per process. */
export function catalogs(dir = defaultLocalesDir()): Catalogs {
  if (dir === defaultLocalesDir()) return (loaded ??= loadCatalogs(dir));
  return loadCatalogs(dir);
}

export function loadCatalogs(dir: string): Catalogs {
  const gettext = new Gettext();
  const languages = [SOURCE_LANGUAGE];
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.po')).sort()) {
    const lang = file.slice(0, -'.po'.length);
    gettext.addTranslations(lang, DOMAIN, po.parse(readFileSync(join(dir, file))));
    if (lang !== SOURCE_LANGUAGE) languages.push(lang);
  }
  const translators = new Map<string, Translate>();
  const translator = (lang: string): Translate => {
    const known = pick(lang, languages) ?? SOURCE_LANGUAGE;
    let translate = translators.get(known);
    if (!translate) {
      translate = (msgid, values) => {
        gettext.setLocale(known);
        const text = known === SOURCE_LANGUAGE ? msgid : gettext.dgettext(DOMAIN, msgid);
        return values ? fill(text, values) : text;
      };
      translators.set(known, translate);
    }
    return translate;
  };
  return {
    languages,
    translator,
    choose(queryLang, acceptLanguage, fallback) {
      return (
        (queryLang === undefined ? undefined : pick(queryLang, languages)) ??
        fromAcceptLanguage(acceptLanguage, languages) ??
        pick(fallback, languages) ??
        SOURCE_LANGUAGE
      );
    },
  };
}

/** `wanted` itself, or its primary subtag ("es-AR" → "es"), when there is a catalog for it. */
function pick(wanted: string, languages: readonly string[]): string | undefined {
  const tag = wanted.trim().toLowerCase();
  const exact = languages.find((lang) => lang.toLowerCase() === tag);
  if (exact) return exact;
  const primary = tag.split('-')[0]!;
  return languages.find((lang) => lang.toLowerCase() === primary);
}

/** The best language of an Accept-Language header there is a catalog for (RFC 9110 §12.5.4; q=0 means "not this"). */
function fromAcceptLanguage(header: string | undefined, languages: readonly string[]): string | undefined {
  if (!header) return undefined;
  const ranges = header
    .split(',')
    .map((part, index) => {
      const [range = '', ...params] = part.trim().split(';');
      const q = params.map((p) => /^\s*q=([0-9.]+)\s*$/i.exec(p)?.[1]).find((v) => v !== undefined);
      return { range: range.trim(), q: q === undefined ? 1 : Number(q), index };
    })
    .filter((entry) => entry.range !== '' && entry.range !== '*' && entry.q > 0 && Number.isFinite(entry.q))
    .sort((a, b) => b.q - a.q || a.index - b.index);
  for (const { range } of ranges) {
    const lang = pick(range, languages);
    if (lang) return lang;
  }
  return undefined;
}

function fill(text: string, values: Readonly<Record<string, string | number>>): string {
  return text.replace(/\{([a-zA-Z_]+)\}/g, (whole, name: string) => (name in values ? String(values[name]) : whole));
}
