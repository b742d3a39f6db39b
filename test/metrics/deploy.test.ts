/** The Grafana dashboard and the alert rules only name metrics that Lacre exports (a rename breaks neither silently). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findPackageRoot } from '../../src/util/package-root.js';
import { LacreMetrics } from '../../src/metrics/metrics.js';

const root = findPackageRoot();
const METRIC_NAME = /\b(?:lacre|process|nodejs)_[a-z0-9_]+/g;

async function exportedNames(): Promise<Set<string>> {
  const text = await new LacreMetrics().scrape();
  return new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap(([, name, type]) =>
    type === 'histogram' ? [name!, `${name}_bucket`, `${name}_sum`, `${name}_count`] : [name!],
  ));
}

function referencedNames(text: string): string[] {
  return [...new Set(text.match(METRIC_NAME) ?? [])];
}

describe('deploy files', () => {
  it('the Grafana dashboard is valid JSON whose every query names exported metrics', async () => {
    const dashboard = JSON.parse(readFileSync(join(root, 'deploy/grafana/lacre.json'), 'utf8')) as {
      panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
    };
    const exported = await exportedNames();
    const exprs = dashboard.panels.flatMap((panel) => panel.targets?.map((target) => target.expr) ?? []);
    assert.ok(exprs.length >= 20, 'the dashboard has its queries');
    const unknown = referencedNames(exprs.join('\n')).filter((name) => !exported.has(name));
    assert.deepEqual(unknown, []);
  });

  it('the alert rules name exported metrics and cover tempfail ratio, relay, database and key expiry', async () => {
    const rules = readFileSync(join(root, 'deploy/prometheus/lacre-alerts.yml'), 'utf8');
    const exported = await exportedNames();
    const unknown = referencedNames(rules).filter((name) => !exported.has(name));
    assert.deepEqual(unknown, []);
    for (const alert of ['LacreTempfailRatioHigh', 'LacreRelayDown', 'LacreDatabaseDown', 'LacreKeyExpiryWave']) {
      assert.match(rules, new RegExp(`^ {6}- alert: ${alert}$`, 'm'));
    }
  });
});
