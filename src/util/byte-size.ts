/** Sizes for people: "200 MiB", "1 GiB", "64 kB"; exact, so the text reads back as the same number. */

const BINARY_UNITS = [['TiB', 1024 ** 4], ['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const;
const DECIMAL_UNITS = [['TB', 1e12], ['GB', 1e9], ['MB', 1e6], ['kB', 1e3]] as const;

/**
 * The largest unit that divides the size exactly (binary units first, the decimal ones an admin may have written
 * next), else bytes: "200 MiB", "200 MB", "1500001 bytes". Never rounded, so a size printed can be read back.
 */
export function formatByteSize(bytes: number): string {
  if (bytes > 0 && Number.isInteger(bytes)) {
    for (const [unit, factor] of [...BINARY_UNITS, ...DECIMAL_UNITS]) if (bytes % factor === 0) return `${bytes / factor} ${unit}`;
  }
  return `${bytes} ${bytes === 1 ? 'byte' : 'bytes'}`;
}
