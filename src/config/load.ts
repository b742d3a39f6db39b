import { existsSync, readFileSync } from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { configSchema, type Config } from './schema.js';

/** Read when neither --config nor LACRE_CONFIG names a file, if it exists (the `lacre` command passes it). */
export const DEFAULT_CONFIG_FILE = '/etc/lacre/lacre.toml';

export interface LoadConfigOptions {
  /** Config file; when absent, LACRE_CONFIG; when that is absent too, `defaultFile` if it exists. */
  file?: string;
  /** The file read when neither `file` nor LACRE_CONFIG names one, if it exists; none when unset. */
  defaultFile?: string;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

const ENV_PREFIX = 'LACRE_';
/** LACRE_ variables that are not settings: the config file, and the Incoming Box user token of `lacre inbox fetch`. */
export const nonConfigVariables: ReadonlySet<string> = new Set(['LACRE_CONFIG', 'LACRE_INBOX_TOKEN']);

type RawConfig = Record<string, Record<string, unknown>>;

/** One load in progress: the schema it checks against and what has been gathered so far. */
interface Loading {
  schema: z.ZodObject;
  sections: string[];
  raw: RawConfig;
  /** "section.key" -> where the value came from: a file path or an environment variable name. */
  origins: Map<string, string>;
  problems: string[];
}

/**
 * Reads the TOML file (if any), applies LACRE_<SECTION>_<KEY> overrides and validates the result.
 * Every problem found is reported at once, one per line, in a ConfigError naming the key and its origin.
 * An empty environment variable counts as unset.
 */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  return loadConfigWith(configSchema, options);
}

/** loadConfig against any schema of the same shape (sections of keys); for tests of future sections. */
export function loadConfigWith<Schema extends z.ZodObject>(schema: Schema, options: LoadConfigOptions = {}): z.output<Schema> {
  const env = options.env ?? process.env;
  const file = options.file ?? nonEmpty(env.LACRE_CONFIG) ?? existingFile(options.defaultFile);
  const loading: Loading = { schema, sections: Object.keys(schema.shape), raw: {}, origins: new Map(), problems: [] };
  if (file !== undefined) readFileSettings(loading, file);
  readEnvSettings(loading, env);
  const result = schema.safeParse(loading.raw);
  if (!result.success) loading.problems.push(...result.error.issues.flatMap((issue) => describeIssue(loading, issue)));
  if (loading.problems.length > 0) throw new ConfigError(loading.problems.join('\n'));
  return result.data as z.output<Schema>;
}

function existingFile(path: string | undefined): string | undefined {
  return path !== undefined && existsSync(path) ? path : undefined;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

// ---- schema introspection (zod v4 internals: def.type, def.innerType, def.in, def.options, def.checks) ----

type AnySchema = z.ZodType;
interface SchemaDef {
  type: string;
  innerType?: AnySchema;
  in?: AnySchema;
  options?: AnySchema[];
  checks?: { _zod: { def: { check: string; value?: number; inclusive?: boolean; format?: string; minimum?: number } } }[];
  entries?: Record<string, string>;
  shape?: Record<string, AnySchema>;
}

function defOf(schema: AnySchema): SchemaDef {
  return (schema as unknown as { def: SchemaDef }).def;
}

/** Strips default/optional/prefault/nullable/pipe wrappers down to the type that receives the input. */
function inputSchema(schema: AnySchema): AnySchema {
  let current = schema;
  for (;;) {
    const def = defOf(current);
    if (def.innerType && ['default', 'optional', 'prefault', 'nullable', 'readonly', 'catch'].includes(def.type)) current = def.innerType;
    else if (def.type === 'pipe' && def.in) current = def.in;
    else return current;
  }
}

function sectionShape(loading: Loading, section: string): Record<string, AnySchema> | undefined {
  const sectionSchema = (loading.schema.shape as Record<string, AnySchema>)[section];
  if (!sectionSchema) return undefined;
  return (inputSchema(sectionSchema) as unknown as { shape: Record<string, AnySchema> }).shape;
}

function fieldSchema(loading: Loading, section: string, key: string): AnySchema | undefined {
  const shape = sectionShape(loading, section);
  return shape && Object.hasOwn(shape, key) ? shape[key] : undefined;
}

type InputType = 'number' | 'boolean' | 'string' | 'array';

function acceptedTypes(schema: AnySchema): Set<InputType> {
  const inner = inputSchema(schema);
  const def = defOf(inner);
  if (def.type === 'union') return new Set((def.options ?? []).flatMap((option) => [...acceptedTypes(option)]));
  if (def.type === 'number') return new Set(['number']);
  if (def.type === 'boolean') return new Set(['boolean']);
  if (def.type === 'array') return new Set(['array']);
  return new Set(['string']);
}

interface NumberBounds { integer: boolean; min?: { value: number; inclusive: boolean }; max?: { value: number; inclusive: boolean } }

function numberBounds(schema: AnySchema): NumberBounds {
  const bounds: NumberBounds = { integer: false };
  for (const check of defOf(schema).checks ?? []) {
    const { check: kind, value, inclusive = true, format } = check._zod.def;
    if (kind === 'number_format' && (format === 'safeint' || format === 'int32' || format === 'uint32')) bounds.integer = true;
    if (kind === 'greater_than' && value !== undefined) bounds.min = { value, inclusive };
    if (kind === 'less_than' && value !== undefined) bounds.max = { value, inclusive };
  }
  return bounds;
}

function describeNumber(schema: AnySchema, given: unknown): string {
  const { integer, min, max } = numberBounds(schema);
  const noun = integer && typeof given === 'number' && !Number.isInteger(given) ? 'whole number' : 'number';
  if (min?.inclusive && max?.inclusive) return `a ${noun} from ${min.value} to ${max.value}`;
  const parts = [
    min && (min.inclusive ? `at least ${min.value}` : `greater than ${min.value}`),
    max && (max.inclusive ? `at most ${max.value}` : `less than ${max.value}`),
  ].filter(Boolean);
  const kind = integer ? 'whole number' : noun;
  return parts.length > 0 ? `a ${kind} ${parts.join(' and ')}` : `a ${kind}`;
}

/** What the admin should have written, in words; undefined when zod's own message says it better. */
function describeExpected(schema: AnySchema, given: unknown): string | undefined {
  const inner = inputSchema(schema);
  const def = defOf(inner);
  switch (def.type) {
    case 'number': return describeNumber(inner, given);
    case 'boolean': return 'true or false';
    case 'enum': return `one of ${Object.values(def.entries ?? {}).join(', ')}`;
    case 'union': {
      const types = acceptedTypes(inner);
      return types.has('number') && types.has('string') ? 'a size such as 200MB, 64KiB or a number of bytes' : undefined;
    }
    case 'string': return typeof given === 'string' ? undefined : 'a string';
    case 'array': return Array.isArray(given) ? undefined : 'a list, e.g. ["a", "b"] (comma-separated in the environment)';
    default: return undefined;
  }
}

// ---- sources ----

function readFileSettings(loading: Loading, file: string): void {
  const { problems } = loading;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    problems.push(`cannot read config file ${file}: ${(error as Error).message}`);
    return;
  }
  let table: Record<string, unknown>;
  try {
    table = parseToml(text);
  } catch (error) {
    problems.push(describeTomlError(file, error));
    return;
  }
  for (const [section, value] of Object.entries(table)) {
    if (!loading.sections.includes(section)) {
      problems.push(`${section}: unknown section (in ${file}${didYouMean(nearest(section, loading.sections))})`);
    } else if (!isTable(value)) {
      problems.push(`${section} (from ${file}): expected a table [${section}], got ${formatValue(value)}`);
    } else {
      copySection(loading, file, section, value);
    }
  }
}

/** "file:line:column: invalid TOML: what smol-toml said" (its code excerpt is left out: the line may hold a password). */
function describeTomlError(file: string, error: unknown): string {
  const said = (error as Error).message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
  const where = error instanceof TomlError ? `${file}:${error.line}:${error.column}` : file;
  return `${where}: invalid TOML: ${said}`;
}

function copySection(loading: Loading, file: string, section: string, table: Record<string, unknown>): void {
  const { raw, origins, problems } = loading;
  const knownKeys = Object.keys(sectionShape(loading, section) ?? {});
  for (const [key, value] of Object.entries(table)) {
    if (!knownKeys.includes(key)) {
      const near = nearest(key, knownKeys);
      problems.push(`${section}.${key}: unknown key (in ${file}${didYouMean(near && `${section}.${near}`)})`);
      continue;
    }
    (raw[section] ??= {})[key] = value;
    origins.set(`${section}.${key}`, file);
  }
}

function readEnvSettings(loading: Loading, env: NodeJS.ProcessEnv): void {
  const { raw, origins, problems } = loading;
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || nonConfigVariables.has(name) || value === undefined || value === '') continue;
    const target = resolveEnvName(loading, name);
    if (typeof target === 'string') {
      problems.push(target);
      continue;
    }
    const { section, key, schema } = target;
    const coerced = coerceEnvValue(value, schema);
    if (!coerced.ok) {
      problems.push(`${section}.${key} (from ${name}): expected ${coerced.expected}, got ${formatValue(value)}`);
      continue;
    }
    (raw[section] ??= {})[key] = coerced.value;
    origins.set(`${section}.${key}`, name);
  }
}

/** Maps LACRE_INCOMING_BOX_URL to section incoming_box, key url; longest section name first. A string is a problem. */
function resolveEnvName(loading: Loading, name: string): { section: string; key: string; schema: AnySchema } | string {
  const rest = name.slice(ENV_PREFIX.length).toLowerCase();
  const sections = [...loading.sections].sort((a, b) => b.length - a.length);
  const candidates = sections.filter((section) => rest.startsWith(`${section}_`) && rest.length > section.length + 1);
  for (const section of candidates) {
    const key = rest.slice(section.length + 1);
    const schema = fieldSchema(loading, section, key);
    if (schema) return { section, key, schema };
  }
  const section = candidates[0];
  if (section === undefined) {
    return `${name}: unknown setting (it starts with no section name; sections are ${loading.sections.join(', ')})`;
  }
  const key = rest.slice(section.length + 1);
  const near = nearest(key, Object.keys(sectionShape(loading, section) ?? {}));
  return `${name}: unknown setting (${section}.${key} is not a key${didYouMean(near && envName(section, near))})`;
}

export function envName(section: string, key: string): string {
  return `${ENV_PREFIX}${section}_${key}`.toUpperCase();
}

type Coerced = { ok: true; value: unknown } | { ok: false; expected: string };

function coerceEnvValue(text: string, schema: AnySchema): Coerced {
  const types = acceptedTypes(schema);
  // A list: comma-separated items, each trimmed, empty ones dropped (the schema then checks each item).
  if (types.has('array')) return { ok: true, value: text.split(',').map((item) => item.trim()).filter((item) => item !== '') };
  if (types.has('string')) return { ok: true, value: text };
  if (types.has('number')) {
    const trimmed = text.trim();
    return /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i.test(trimmed)
      ? { ok: true, value: Number(trimmed) }
      : { ok: false, expected: describeNumber(inputSchema(schema), undefined) };
  }
  const flag = ({ true: true, yes: true, '1': true, false: false, no: false, '0': false } as Record<string, boolean>)[text.trim().toLowerCase()];
  return flag === undefined ? { ok: false, expected: 'true or false (or yes/no, 1/0)' } : { ok: true, value: flag };
}

// ---- problem wording ----

function describeIssue(loading: Loading, issue: z.core.$ZodIssue): string[] {
  const { raw, origins } = loading;
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    // Normally caught while reading; kept so nothing is ever reported without its key.
    return issue.keys.map((key) => `${[...path, key].join('.')}: unknown key`);
  }
  const [section, key, item] = path;
  const dotted = path.join('.');
  // A rule across settings (configSchema's superRefine) says in its own words what is missing.
  if (issue.code === 'custom' && issue.message.startsWith(`${dotted} `)) return [issue.message];
  const origin = origins.get(dotted) ?? origins.get(`${section}.${key}`) ?? origins.get(section ?? '');
  const where = origin ? ` (from ${origin})` : '';
  const value = section !== undefined && key !== undefined ? raw[section]?.[key] : undefined;
  // An item of a list is reported alone (path "section.key.N"), not with the whole list; a URL without its password.
  const listed = item !== undefined && Array.isArray(value) ? value[Number(item)] : value;
  const given = typeof listed === 'string' && key !== undefined && isUrlKey(key) ? maskUrlPassword(listed) : listed;
  const schema = section !== undefined && key !== undefined && item === undefined ? fieldSchema(loading, section, key) : undefined;
  const expected = schema && describeExpected(schema, given);
  if (expected) return [`${dotted}${where}: expected ${expected}, got ${formatValue(given)}`];
  const message = issue.message.includes('got ') ? issue.message : `${issue.message}, got ${formatValue(given)}`;
  return [`${dotted}${where}: ${message}`];
}

function formatValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === undefined) return 'nothing';
  if (isTable(value) || Array.isArray(value)) return JSON.stringify(value);
  return String(value);
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** The candidate closest to a mistyped word (edit distance ≤ 2), if any. */
function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate);
    if (distance <= 2 && (!best || distance < best.distance)) best = { candidate, distance };
  }
  return best?.candidate;
}

function didYouMean(candidate: string | undefined): string {
  return candidate ? `; did you mean ${candidate}?` : '';
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length]!;
}

// ---- masking ----

const SECRET_KEY = /password|secret|token/i;
const MASK = '*****';

/** A copy safe to print: secrets in any section, and passwords inside URLs (database.url), are masked. */
export function maskSecrets(config: Config): Config {
  const copy = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
  for (const section of Object.values(copy)) {
    for (const [key, value] of Object.entries(section)) {
      if (Array.isArray(value) && SECRET_KEY.test(key)) section[key] = value.map(() => MASK);
      if (typeof value !== 'string') continue;
      if (SECRET_KEY.test(key)) section[key] = MASK;
      else if (isUrlKey(key)) section[key] = maskUrlPassword(value);
    }
  }
  return copy as unknown as Config;
}

function isUrlKey(key: string): boolean {
  return key === 'url' || key.endsWith('_url');
}

export function maskUrlPassword(text: string): string {
  try {
    const url = new URL(text);
    if (url.password) url.password = MASK;
    for (const name of [...url.searchParams.keys()]) {
      if (SECRET_KEY.test(name)) url.searchParams.set(name, MASK);
    }
    return url.toString();
  } catch {
    return text.replace(/(\/\/[^/@:]*:)[^@]*@/, `$1${MASK}@`).replace(/(password=)[^&\s]*/gi, `$1${MASK}`);
  }
}
