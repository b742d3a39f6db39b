/** Resolves at the first of these signals: how a long-running command (serve, inbox serve) learns to stop. */
export function waitForSignal(signals: readonly NodeJS.Signals[]): Promise<void> {
  return new Promise((resolve) => {
    for (const signal of signals) process.once(signal, () => resolve());
  });
}
