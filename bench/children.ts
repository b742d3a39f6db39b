import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { LACRE_BIN } from '../test/helpers/lacre.js';
import { SmtpSession } from './smtp-client.js';

/** Every child this process started; all are killed when it exits, whatever the reason. */
const children = new Set<ChildProcess>();

/** SIGKILLs every child still running (also done on exit, whatever the reason). */
export function killAll(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
process.on('exit', killAll);

/** Registers a child to be SIGKILLed when this process exits, whatever the reason. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** A running child process measured or used by the bench. */
export class Child {
  private stderr = '';

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
    readonly port: number,
  ) {
    process.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  get lastStderr(): string {
    return this.stderr;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.process;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * Starts a bench helper (bench/sink.ts, bench/passthrough.ts) with an IPC channel; it answers with
 * { ready: port } once listening.
 */
export async function startHelper(script: 'sink' | 'passthrough', env: Record<string, string>, timeoutMs = 15_000): Promise<Child> {
  const path = fileURLToPath(new URL(`./${script}.js`, import.meta.url));
  const child = track(fork(path, [], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: [] }));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} not ready within ${timeoutMs} ms`)), timeoutMs);
    child.once('message', (message: { ready?: number }) => (clearTimeout(timer), resolve(Number(message.ready))));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`${script} exited ${code} before it was ready`))));
  });
  return new Child(script, child, port);
}

/** Asks a helper over IPC and waits for its answer. */
export function askHelper<T>(helper: Child, question: string, timeoutMs = 5_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${helper.name} did not answer "${question}"`)), timeoutMs);
    helper.process.once('message', (answer: T) => (clearTimeout(timer), resolve(answer)));
    helper.process.send(question);
  });
}

/**
 * Starts `lacre serve` on a port picked here (so it can run at log level warn, where the "ready" line with the
 * bound port is not written) and waits until that port greets.
 */
export async function startLacre(env: Record<string, string>, timeoutMs = 60_000): Promise<Child> {
  const port = await freePort();
  const child = track(
    spawn(process.execPath, [LACRE_BIN, 'serve'], {
      env: { ...process.env, ...env, LACRE_SMTP_LISTEN: `127.0.0.1:${port}` },
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
  const lacre = new Child('lacre', child, port);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`lacre serve exited ${child.exitCode}: ${lacre.lastStderr}`);
    const session = await SmtpSession.open(port, 2_000).catch(() => undefined);
    if (session) {
      await session.close();
      return lacre;
    }
    if (Date.now() > deadline) {
      await lacre.stop(1_000);
      throw new Error(`lacre serve did not greet on ${port} within ${timeoutMs} ms: ${lacre.lastStderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// ---- /proc sampling ----

export interface MemorySample {
  rssBytes: number;
  peakRssBytes: number;
}

/** VmRSS and VmHWM (the peak RSS since the process started) of a live process. */
export function readMemory(pid: number): MemorySample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rssBytes: kib('VmRSS'), peakRssBytes: kib('VmHWM') };
}

/**
 * Resets VmHWM to the current RSS (clear_refs "5", Linux 4.0+), so the next peak read is this moment's onward.
 * False when the kernel refuses: then only polled RSS can tell a later peak.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** User + system CPU time a live process has used, in milliseconds. */
export function readCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat(5) (utime, stime) are at 11 and 12 once pid and comm are cut off.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

/** Polls VmRSS every `everyMs` until stopped; the highest value seen, as a cross-check on VmHWM. */
export function pollRss(pid: number, everyMs = 50): { stop(): number } {
  let highest = 0;
  const sample = () => {
    try {
      highest = Math.max(highest, readMemory(pid).rssBytes);
    } catch {
      // The process is gone; the caller notices through its own channel.
    }
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return highest;
    },
  };
}
