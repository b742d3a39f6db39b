/**
 * The config loader as a property: any TOML file (valid or not, known keys with values of any type, unknown
 * sections and keys) and any LACRE_ environment either loads or throws a ConfigError whose every line names
 * what it is about (a key, a section, a variable, the file); never another exception.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { envName, loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { checkProperty, corpusCases } from './settings.js';

const workDir = mkdtempSync(join(tmpdir(), 'lacre-fuzz-config-'));
after(() => rmSync(workDir, { recursive: true, force: true }));
const file = join(workDir, 'lacre.toml');

/** Every section and key the loader knows (the defaults, plus the optional keys they leave out). */
const defaults = loadConfig({ env: {} }) as unknown as Record<string, Record<string, unknown>>;
const known: Array<[string, string]> = Object.entries(defaults).flatMap(([section, keys]) => Object.keys(keys).map((key): [string, string] => [section, key]));
const extraKeys: Array<[string, string]> = [['database', 'url'], ['incoming_box', 'url'], ['incoming_box', 'token'], ['smtp', 'hostname'], ['filter', 'spool_dir'], ['filter', 'workers']];
const keys = [...known, ...extraKeys, ['smtp', 'listn'], ['nosuch', 'key'], ['database', 'URL']] as Array<[string, string]>;
const sections = [...new Set(keys.map(([section]) => section))];

const tomlValue = fc.oneof(
  fc.constantFrom('true', 'false', '0', '-1', '1', '65536', '3.5', '1e400', 'inf', '-inf', 'nan', '0x10', '1979-05-27T07:32:00Z', '07:32:00', '"200MB"', '"64KiB"', '"1.5GB"', '"-1"', '""', '"127.0.0.1:0"', '"[::1]:25"', '"postgres://u:p@h/db"', '[]', '["a", "b"]', '[1, 2]', '{ a = 1 }', '"plain"', "'literal'", '"""multi\nline"""', '99999999999999999999', '"\\u0000"', '"tempfail"'),
  fc.integer().map(String),
  fc.double().map((value) => (Number.isFinite(value) ? String(value) : 'nan')),
  fc.string({ maxLength: 12 }).map((text) => JSON.stringify(text)),
);

const keyLine = fc.tuple(fc.constantFrom(...keys), tomlValue).map(([[, key], value]) => ({ key, value }));
const sectionBlock = fc.tuple(fc.constantFrom(...sections, 'unknown_section', 'smtp.nested'), fc.array(keyLine, { maxLength: 5 })).map(([section, lines]) => `[${section}]\n${lines.map(({ key, value }) => `${key} = ${value}`).join('\n')}\n`);
const tomlText = fc.oneof(
  { weight: 4, arbitrary: fc.array(sectionBlock, { maxLength: 4 }).map((blocks) => blocks.join('\n')) },
  { weight: 1, arbitrary: fc.constantFrom('smtp = 1\n', 'smtp = "x"\n[smtp]\n', '[smtp\n', 'a.b.c = 1\n', '[[smtp]]\nlisten = "x"\n', '= 1\n', '[smtp]\nlisten = \n', '\ufeff[smtp]\n', '[smtp]\n[smtp]\n') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 80 }) },
);

const envValue = fc.oneof(fc.constantFrom('', ' ', 'true', 'no', '1', '0', '-5', '1e3', '200MB', ',', 'a,,b', 'x', '127.0.0.1:0', '0x1f', ' 7 ', 'NaN', 'Infinity'), fc.string({ maxLength: 10 }));
const envKey = fc.oneof(fc.constantFrom(...keys).map(([section, key]) => envName(section, key)), fc.constantFrom('LACRE_', 'LACRE_SMTP', 'LACRE_SMTP_', 'LACRE_CONFIG_X', 'LACRE_INBOX_TOKEN', 'LACRE__', 'LACRE_INCOMING_BOX_'), fc.string({ maxLength: 8 }).map((tail) => `LACRE_${tail}`));
const environment = fc.array(fc.tuple(envKey, envValue), { maxLength: 4 }).map((pairs) => Object.fromEntries(pairs));

interface ConfigInput {
  readonly toml: string | undefined;
  readonly env: Record<string, string>;
}

function property({ toml, env }: ConfigInput): void {
  if (toml !== undefined) writeFileSync(file, toml);
  try {
    loadConfig({ env, ...(toml === undefined ? {} : { file }) });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a ConfigError, not ${String((error as Error)?.stack ?? error)}`);
    for (const line of error.message.split('\n')) assert.ok(namesWhatItIsAbout(line, env), `the line names its key: ${JSON.stringify(line)}`);
  }
}

/**
 * A problem line starts with what it is about: the file (with the place of a TOML error), a LACRE_ variable that
 * was set, a section or "section.key" (an item of a list: "section.key.N"); an unknown section is named as written.
 */
function namesWhatItIsAbout(line: string, env: Record<string, string>): boolean {
  if (line.startsWith(`${file}:`) || line.startsWith(`cannot read config file ${file}`)) return true;
  if (new RegExp(`: unknown section \\(in ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`).test(line)) return true;
  if (Object.keys(env).some((variable) => line.startsWith(`${variable}: `))) return true;
  const name = /^[^ :]+/.exec(line)?.[0] ?? '';
  const origin = / \(from ([^)]+)\)/.exec(line)?.[1];
  if (origin !== undefined && origin !== file && !Object.hasOwn(env, origin)) return false;
  return sections.includes(name.split('.')[0]!);
}

describe('fuzz: the config loader', () => {
  it('any TOML and environment: a Config, or a ConfigError naming each key', () =>
    checkProperty('config', fc.property(fc.record({ toml: fc.option(tomlText, { nil: undefined }), env: environment }), property), 300));

  it('replays the kept counterexamples (test/fuzz/corpus/config-*.json)', { skip: corpusCases('config').length === 0 && 'no config case kept yet' }, () => {
    for (const entry of corpusCases('config')) property(entry.input as unknown as ConfigInput);
  });
});
