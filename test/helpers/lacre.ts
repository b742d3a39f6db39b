import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assertNoLeaks } from './leak-markers.js';

/** The built CLI, as `npx lacre` runs it. */
export const LACRE_BIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/**
 * Children run without an admin socket unless a test names one: the default (./data/admin.sock) is relative
 * to the working directory, which services started side by side would share (the second refuses to start),
 * and where a `lacre keys` child would find another test's service.
 */
const NO_ADMIN_SOCKET = { LACRE_ADMIN_SOCKET: 'off' };

/** Set when the run forces every child's log level; tests of the level switches themselves skip then. */
export const forcedLogLevel = process.env.LACRE_LOG_LEVEL || undefined;

/**
 * LACRE_LOG_LEVEL given to the test run wins over the level a test sets, so that a run at
 * LACRE_LOG_LEVEL=trace checks every line any level writes for leaks (leak-markers.ts).
 */
function childEnv(defaults: NodeJS.ProcessEnv, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const level = forcedLogLevel;
  return { ...process.env, ...defaults, ...env, ...(level ? { LACRE_LOG_LEVEL: level } : {}) };
}

/**
 * A one-shot command logs on stderr, or in LACRE_LOG_FILE when the test names one; on stdout only what it
 * prints, unless a line is one of its log lines.
 */
function logLinesOf(stdout: Buffer, stderr: string, logFile: string | undefined): string[] {
  const printed = stdout.toString('utf8').split('\n').filter((line) => /^\{.*"level":.*"msg":/.test(line));
  const filed = logFile && existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n') : [];
  return [...stderr.split('\n'), ...printed, ...filed];
}

export interface RunResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs one lacre command to completion; rejects when a line it logged holds a leak marker. */
export function runLacre(args: string[], env: NodeJS.ProcessEnv, input?: Buffer | string, cwd?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LACRE_BIN, ...args], { cwd, env: childEnv(NO_ADMIN_SOCKET, env), stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const result = { code: code ?? -1, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString('utf8') };
      try {
        assertNoLeaks(logLinesOf(result.stdout, result.stderr, env.LACRE_LOG_FILE), `lacre ${args[0] ?? ''}`);
      } catch (error) {
        return reject(error);
      }
      resolve(result);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

export interface LogLine {
  /** pino level name, e.g. "info" (src/log/logger.ts writes names, not numbers). */
  level: string;
  msg: string;
  [key: string]: unknown;
}

/** A running `lacre serve` child process and the JSON log lines it has written. */
export class LacreServer {
  readonly logs: LogLine[] = [];
  port = 0;
  /** The operators' HTTP listener (metrics, health), 0 when http.enabled is false. */
  httpPort = 0;
  private stderr = '';
  /** Every stdout line as written, the ones that are not JSON too. */
  private readonly rawLines: string[] = [];

  private constructor(private readonly child: ChildProcess) {}

  /** The child's process id (for /proc readings such as its RSS). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Starts `lacre serve` (or `command`) and waits for its ready line (`readyMessage`). */
  static async start(
    env: NodeJS.ProcessEnv,
    options: { timeoutMs?: number; cwd?: string; command?: string[]; readyMessage?: string } = {},
  ): Promise<LacreServer> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const child = spawn(process.execPath, [LACRE_BIN, ...(options.command ?? ['serve'])], {
      cwd: options.cwd,
      env: childEnv({ LACRE_SMTP_LISTEN: '127.0.0.1:0', LACRE_HTTP_LISTEN: '127.0.0.1:0', ...NO_ADMIN_SOCKET }, env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const server = new LacreServer(child);
    let pending = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        server.rawLines.push(line);
        if (line.trim()) server.logs.push(JSON.parse(line) as LogLine);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (server.stderr += chunk));
    const readyMessage = options.readyMessage ?? 'lacre is ready';
    const ready = await server.waitForLog((l) => l.msg === readyMessage, timeoutMs);
    server.port = Number(String(ready.listen).split(':').pop());
    if (typeof ready.http === 'string') server.httpPort = Number(ready.http.split(':').pop());
    return server;
  }

  async waitForLog(match: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logs.find(match);
      if (found) return found;
      if (this.child.exitCode !== null) throw new Error(`lacre serve exited ${this.child.exitCode}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`log line not seen within ${timeoutMs} ms; stderr: ${this.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * SIGTERM and wait for a clean exit; resolves with the exit code. Throws when any line the process wrote
   * (stdout and stderr, its whole life) holds a leak marker (leak-markers.ts).
   */
  async stop(): Promise<number> {
    const code = await this.terminate();
    this.assertNoLeaks();
    return code;
  }

  /** Throws naming the line when anything the process wrote so far holds a leak marker. */
  assertNoLeaks(): void {
    assertNoLeaks([...this.rawLines, ...this.stderr.split('\n')], 'lacre serve');
  }

  private async terminate(): Promise<number> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    if (this.child.signalCode !== null) return -1;
    // 'close', not 'exit': by then every line the process wrote has been read.
    const exited = new Promise<number>((resolve) => this.child.once('close', (code) => resolve(code ?? -1)));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  /** Sends a signal (e.g. SIGUSR2) without waiting for anything. */
  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}
