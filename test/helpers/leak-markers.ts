/**
 * Strings that must never appear in a log line (DESIGN rule 5, docs/security.md): suites put them in the
 * subjects, bodies and secrets they hand to `lacre serve` and other commands, and the helpers of lacre.ts check
 * every line those processes wrote. Secrets made while a test runs (tokens Lacre issues) are added with
 * `markSecret`.
 */
export const LEAK_MARKERS = {
  subject: 'LeakMarkerSubject-q7Zt',
  body: 'LeakMarkerBody-q7Zt',
  token: 'LeakMarkerToken-q7Zt',
} as const;

const secrets = new Set<string>(Object.values(LEAK_MARKERS));

/** Adds a secret this test run made (a box token, a confirmation token) to what no log line may hold. */
export function markSecret(secret: string): void {
  // A very short value would match by chance; Lacre's tokens are 43 characters.
  if (secret.length >= 12) secrets.add(secret);
}

/** The markers and marked secrets `text` contains. */
export function leakedMarkers(text: string): string[] {
  return [...secrets].filter((secret) => text.includes(secret));
}

/** Throws naming the first offending line when a log line holds a marker or a marked secret. */
export function assertNoLeaks(lines: readonly string[], where: string): void {
  for (const line of lines) {
    const found = leakedMarkers(line);
    if (found.length > 0) throw new Error(`${where} logged a subject, body or secret (${found.join(', ')}): ${line.slice(0, 500)}`);
  }
}
