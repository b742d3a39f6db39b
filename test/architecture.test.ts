/**
 * The rooms of docs/architecture.md, checked: which room may import which, and which room alone may use a
 * library whose internals it reaches into. A new import that crosses a wall fails here, so the map stays true.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** Modules every room may use: the error types, configuration, logging and small utilities. */
const SHARED = ['errors', 'config', 'log', 'util'];

/** Each room and the rooms it may import besides SHARED (docs/architecture.md, "Rooms"). */
const MAY_IMPORT: Record<string, readonly string[] | 'anything'> = {
  cli: 'anything',
  runtime: ['filter', 'keys', 'db', 'delivery', 'box', 'metrics', 'crypto', 'http', 'web', 'admin'],
  smtp: ['filter'],
  filter: ['keys', 'mime', 'crypto'],
  delivery: ['filter', 'metrics', 'mime', 'db'],
  keys: ['crypto', 'db'],
  db: [],
  mime: [],
  crypto: ['mime'],
  box: ['db', 'keys', 'http', 'mime', 'crypto', 'soledad'],
  'box-client': ['mime', 'crypto', 'soledad'],
  soledad: [],
  http: ['metrics', 'db'],
  metrics: ['db', 'keys', 'filter'],
  web: ['keys', 'db', 'http', 'crypto', 'mime', 'filter', 'delivery'],
  admin: ['keys', 'db', 'http', 'crypto'],
  errors: [],
  config: ['util'],
  log: [],
  util: [],
};

/** Libraries one room owns: the only rooms that may import them (cli may read keys with openpgp too). */
const OWNED_LIBRARIES: Record<string, readonly string[]> = {
  nodemailer: ['delivery'],
  'smtp-server': ['smtp'],
  pg: ['db'],
  '@electric-sql/pglite': ['db'],
  fastify: ['http', 'box', 'web', 'admin'],
  'prom-client': ['metrics'],
  openpgp: ['crypto', 'keys', 'filter', 'box-client', 'cli', 'web'],
};

interface Import {
  readonly file: string;
  readonly specifier: string;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^'";]*?from\s*'([^']+)'|\bimport\(\s*'([^']+)'\s*\)/g;

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT)].map((match) => ({ file, specifier: (match[1] ?? match[2])! }));
}

/** The room of a file under src/: its folder, or the file's own name for files at the top (errors, runtime). */
function roomOf(file: string): string {
  const [first, ...rest] = relative(SRC, file).split('/');
  return rest.length === 0 ? first!.replace(/\.[jt]s$/, '') : first!;
}

function targetRoom(from: Import): string | undefined {
  if (!from.specifier.startsWith('.')) return undefined;
  return roomOf(resolve(dirname(from.file), from.specifier));
}

function libraryOf(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('node:')) return undefined;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const everyImport = sourceFiles(SRC).flatMap(importsOf);

describe('rooms', () => {
  it('finds the source and its imports (the check below is not vacuous)', () => {
    assert.ok(everyImport.length > 200, `only ${everyImport.length} imports found under ${SRC}`);
    assert.ok(everyImport.some((i) => roomOf(i.file) === 'smtp' && targetRoom(i) === 'filter'));
  });

  it('every room has a row in the table', () => {
    const rooms = new Set(everyImport.map((i) => roomOf(i.file)));
    assert.deepEqual([...rooms].filter((room) => !(room in MAY_IMPORT)), []);
  });

  it('no room imports a room it may not', () => {
    const crossings = everyImport.flatMap((i) => {
      const from = roomOf(i.file);
      const to = targetRoom(i);
      const allowed = MAY_IMPORT[from];
      if (to === undefined || to === from || allowed === 'anything' || SHARED.includes(to)) return [];
      return allowed?.includes(to) ? [] : [`${relative(SRC, i.file)} imports ${i.specifier} (${from} → ${to})`];
    });
    assert.deepEqual(crossings, []);
  });

  it('libraries whose internals a room relies on are imported by that room alone', () => {
    const strays = everyImport.flatMap((i) => {
      const library = libraryOf(i.specifier);
      const owners = library === undefined ? undefined : OWNED_LIBRARIES[library];
      return owners === undefined || owners.includes(roomOf(i.file)) ? [] : [`${relative(SRC, i.file)} imports ${i.specifier}`];
    });
    assert.deepEqual(strays, []);
  });

  it('outside src/filter/ nothing imports the pipeline: the other rooms use the ports', () => {
    const users = everyImport.filter((i) => roomOf(i.file) !== 'filter' && /\/filter\/pipeline\.js$/.test(i.specifier));
    assert.deepEqual(users.map((i) => relative(SRC, i.file)), []);
  });
});
