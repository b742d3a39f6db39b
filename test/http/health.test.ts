import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { HealthMonitor, runChecks, type ReadinessCheck } from '../../src/http/health.js';
import { LogLevelControl } from '../../src/http/log-level.js';
import { createLogger } from '../../src/log/logger.js';

const never: ReadinessCheck = { name: 'stuck', run: () => new Promise<void>(() => undefined) };
const healthy: ReadinessCheck = { name: 'fine', run: async () => undefined };

describe('readiness checks', () => {
  it('bounds a check that never answers by the timeout and names it', async () => {
    const started = Date.now();
    const report = await runChecks([never, healthy], 100);
    assert.ok(Date.now() - started < 2000);
    assert.equal(report.ready, false);
    assert.deepEqual(
      report.checks.map(({ name, ok, error }) => ({ name, ok, error })),
      [
        { name: 'stuck', ok: false, error: 'no answer within 100 ms' },
        { name: 'fine', ok: true, error: undefined },
      ],
    );
  });

  it('reports the error a failing check gives', async () => {
    const report = await runChecks([{ name: 'relay', run: async () => Promise.reject(new Error('no SMTP greeting from 127.0.0.1:1')) }]);
    assert.deepEqual(report.checks.map((c) => [c.name, c.ok, c.error]), [['relay', false, 'no SMTP greeting from 127.0.0.1:1']]);
  });

  it('runs once for concurrent callers, and reuses a recent report for scrapes', async () => {
    let runs = 0;
    const counting: ReadinessCheck = { name: 'counting', run: async () => void (runs += 1) };
    const monitor = new HealthMonitor([counting], 1000);
    await Promise.all([monitor.check(), monitor.check(), monitor.recent()]);
    assert.equal(runs, 1);
    await monitor.recent(60_000);
    assert.equal(runs, 1, 'recent enough');
    await monitor.recent(0);
    assert.equal(runs, 2);
    await monitor.check();
    assert.equal(runs, 3, 'check() always runs');
  });
});

describe('log level control', () => {
  function capture() {
    const stream = new PassThrough();
    const lines: Array<Record<string, unknown>> = [];
    stream.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    return { stream, lines };
  }

  it('toggles between the configured level and debug, logging each change where it can be seen', () => {
    const { stream, lines } = capture();
    const logger = createLogger('warn', stream);
    const control = new LogLevelControl(logger, 'warn');
    assert.deepEqual(control.toggleDebug('test'), { previous: 'warn', level: 'debug' });
    assert.equal(logger.level, 'debug');
    logger.child({ session: 's' }).debug('child sees debug');
    assert.deepEqual(control.toggleDebug('test'), { previous: 'debug', level: 'warn' });
    logger.info('hidden again');
    const messages = lines.map((l) => `${String(l.level)} ${String(l.msg)}`);
    assert.deepEqual(messages, ['info log level changed', 'debug child sees debug', 'info log level changed']);
    assert.equal(lines[0]!.next, 'debug');
    assert.equal(lines[2]!.next, 'warn');
  });

  it('returns from debug to info when debug was the configured level', () => {
    const control = new LogLevelControl(createLogger('debug', new PassThrough()), 'debug');
    assert.deepEqual(control.toggleDebug('test'), { previous: 'debug', level: 'info' });
    assert.deepEqual(control.toggleDebug('test'), { previous: 'info', level: 'debug' });
  });
});
