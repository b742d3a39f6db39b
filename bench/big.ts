/** Big messages: MB/s through the pass-through and through a fresh `lacre serve`, and that process's peak RSS. */
import { askHelper, pollRss, readMemory, resetPeakRss, startLacre, type Child } from './children.js';
import { bigMessageStream, SENDER } from './messages.js';
import { SmtpSession } from './smtp-client.js';
import type { SinkStats } from './sink.js';
import type { Samples } from './stats.js';

export const MB = 1_000_000;

export interface BigSettings {
  /** Message sizes in bytes, each with its number of rounds. */
  sizes: ReadonlyArray<{ bytes: number; rounds: number }>;
}

export interface BigTargets {
  passthrough: Child;
  sink: Child;
  lacreEnv: Record<string, string>;
  recipient: string;
  plainRecipient: string;
}

const WARMUP_BYTES = 1 * MB;

const WORKER_WARMUP_BYTES = 100 * 1024;
/** Armor is 4/3 base64 plus line ends: ~1.38x; anything far off means the output is not what we think. */
const OUTPUT_RATIO = { min: 1.3, max: 1.45 };

export function sizeLabel(bytes: number): string {
  return `big_${bytes / MB}mb`;
}

/**
 * One fresh `lacre serve` (its idle RSS is measured 1 s after it greeted, before a 1 MB and a 100 KiB warm-up message) takes
 * every big message; before each, its peak-RSS counter is reset, so each message's peak is its own. Pass-through
 * and Lacre alternate which goes first from round to round.
 */
export async function measureBigMessages(settings: BigSettings, targets: BigTargets, samples: Samples, progress: (line: string) => void): Promise<void> {
  const lacre = await startLacre(targets.lacreEnv);
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    samples.add('big_lacre_idle_rss_mb', 'MB', readMemory(lacre.pid).rssBytes / MB);
    // Not measured: the first message through a fresh process also pays for JIT compilation.
    await throughPassthrough(WARMUP_BYTES, targets);
    await throughLacre(WARMUP_BYTES, lacre, targets);
    // A message held in memory over 64 KiB is encrypted on the worker, which starts then, as on any server
    // that has encrypted one: the peaks below include the worker's memory.
    const { sunk } = await sendBigMessage(WORKER_WARMUP_BYTES, lacre.port, targets.sink, targets.recipient);
    if (sunk.pgpMessages !== 1) throw new Error('100 KiB warm-up message: Lacre delivered it unencrypted');
    for (const { bytes, rounds } of settings.sizes) {
      const label = sizeLabel(bytes);
      for (let round = 0; round < rounds; round++) {
        let ceiling: number;
        let lacreFigures: LacreBig;
        if (round % 2 === 0) {
          ceiling = await throughPassthrough(bytes, targets);
          lacreFigures = await throughLacre(bytes, lacre, targets);
        } else {
          lacreFigures = await throughLacre(bytes, lacre, targets);
          ceiling = await throughPassthrough(bytes, targets);
        }
        samples.add(`${label}_passthrough_mb_per_s`, 'MB/s', ceiling);
        samples.add(`${label}_lacre_mb_per_s`, 'MB/s', lacreFigures.mbPerS);
        samples.add(`${label}_lacre_ratio_to_ceiling`, 'ratio', lacreFigures.mbPerS / ceiling);
        samples.add(`${label}_lacre_peak_rss_mb`, 'MB', lacreFigures.peakRssBytes / MB);
        samples.add(`${label}_lacre_rss_growth_mb`, 'MB', (lacreFigures.peakRssBytes - lacreFigures.rssBeforeBytes) / MB);
        samples.add(`${label}_lacre_output_ratio`, 'ratio', lacreFigures.outputRatio);
        progress(`  ${bytes / MB} MB round ${round + 1}/${rounds}: pass-through ${ceiling.toFixed(1)} MB/s, lacre ${lacreFigures.mbPerS.toFixed(1)} MB/s, peak RSS ${(lacreFigures.peakRssBytes / MB).toFixed(0)} MB`);
      }
    }
  } finally {
    await lacre.stop();
  }
}

interface LacreBig {
  mbPerS: number;
  rssBeforeBytes: number;
  peakRssBytes: number;
  outputRatio: number;
}

async function throughPassthrough(bytes: number, targets: BigTargets): Promise<number> {
  const { seconds, sunk } = await sendBigMessage(bytes, targets.passthrough.port, targets.sink, targets.plainRecipient);
  if (sunk.largestBytes !== bytes) throw new Error(`big message: the pass-through delivered ${sunk.largestBytes} of ${bytes} bytes`);
  if (sunk.pgpMessages !== 0) throw new Error('big message: the pass-through delivered it encrypted');
  return bytes / MB / seconds;
}

async function throughLacre(bytes: number, lacre: Child, targets: BigTargets): Promise<LacreBig> {
  const rssBeforeBytes = readMemory(lacre.pid).rssBytes;
  const hwmReset = resetPeakRss(lacre.pid);
  const rss = pollRss(lacre.pid);
  const { seconds, sunk } = await sendBigMessage(bytes, lacre.port, targets.sink, targets.recipient).finally(() => rss.stop());
  const polledPeak = rss.stop();
  const peakRssBytes = hwmReset ? Math.max(readMemory(lacre.pid).peakRssBytes, polledPeak) : polledPeak;
  if (sunk.pgpMessages !== 1) throw new Error('big message: Lacre delivered it unencrypted');
  const outputRatio = sunk.largestBytes / bytes;
  if (outputRatio < OUTPUT_RATIO.min || outputRatio > OUTPUT_RATIO.max) {
    throw new Error(`big message: Lacre's output is ${outputRatio.toFixed(3)}x the input, expected ~1.38x (armor)`);
  }
  return { mbPerS: bytes / MB / seconds, rssBeforeBytes, peakRssBytes, outputRatio };
}

/** Streams one big message (generated on the fly, never held whole) through the server on `port`. */
async function sendBigMessage(bytes: number, port: number, sink: Child, recipient: string): Promise<{ seconds: number; sunk: SinkStats }> {
  await askHelper(sink, 'reset');
  const session = await SmtpSession.open(port);
  const startedAt = performance.now();
  try {
    const timeoutMs = Math.max(120_000, (bytes / MB) * 3_000);
    await session.sendStream(SENDER, recipient, bigMessageStream(recipient, bytes), timeoutMs);
  } finally {
    await session.close().catch(() => session.destroy());
  }
  const seconds = (performance.now() - startedAt) / 1000;
  const sunk = await askHelper<SinkStats>(sink, 'stats');
  if (sunk.messages !== 1) throw new Error(`big message: the sink received ${sunk.messages} messages`);
  return { seconds, sunk };
}
