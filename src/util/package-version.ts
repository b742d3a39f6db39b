import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The version in Lacre's own package.json, read once (from dist/src/util/, three levels below the package root). */
export function packageVersion(): string {
  if (cached === undefined) {
    const manifest = new URL('../../../package.json', import.meta.url);
    cached = (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
  }
  return cached;
}
