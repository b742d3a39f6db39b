import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildReportData, renderReport } from '../../bench/report.js';
import { benchRecord, NEWEST_FIGURES } from './records.js';

const CHECKED_OUT = { kind: 'known', head: 'bc7d9a4', same: false, ancestor: true, behind: 5, codeChanges: 2 } as const;

function history() {
  return [
    benchRecord('1111111', { ...NEWEST_FIGURES, passthrough_c10_msgs_per_s: 1257 }),
    benchRecord('2222222', { ...NEWEST_FIGURES, passthrough_c10_msgs_per_s: 3628 }, { dirty: true }),
    benchRecord('0b090e6', NEWEST_FIGURES),
    benchRecord('9999999', NEWEST_FIGURES, { mode: 'full' }),
  ];
}

describe('bench report data', () => {
  const data = buildReportData(history(), 'quick', 'bench/history.jsonl', CHECKED_OUT);

  it('labels every record with its commit', () => {
    assert.deepEqual(data.records.map((record) => record.label), ['1111111', '2222222*', '0b090e6']);
  });

  it('marks the records whose ceiling moved by more than 30 % as machine noise', () => {
    assert.deepEqual(data.records.map((record) => record.noise !== null), [false, true, true]);
    assert.match(data.records[1]!.noise!, /ceiling \+189 % against 1111111/);
    assert.match(data.notices.map((notice) => notice.text).join(' '), /Marked as machine noise .*: 2222222\* \(\+189 % against 1111111\), 0b090e6 \(−66 % against 2222222\*\)/);
  });

  it('opens with what the newest record measured, and says it is not the checked-out commit', () => {
    assert.match(data.headline.map((sentence) => sentence.text).join(' '), /about 1 070 messages\/s for a recipient with a cv25519 key, 68 % of the no-crypto ceiling/);
    assert.match(data.headline.map((sentence) => sentence.text).join(' '), /machine noise/);
    assert.ok(data.notices.some((notice) => notice.level === 'warn' && notice.text.includes('from 0b090e6, 5 commits behind the checked-out bc7d9a4')));
  });

  it('puts words next to every identifier in the table and in the charts', () => {
    const row = data.latest?.rows.find((r) => r.figure === 'lacre_cv25519_c10_ratio_to_ceiling');
    assert.equal(row?.words, 'ratio to pass-through, Lacre with a cv25519 key, 10 sessions');
    assert.deepEqual(data.latest?.rows.filter((r) => r.words === null), []);
    const series = data.charts.flatMap((chart) => chart.series);
    assert.ok(series.every((s) => s.words.length > 0));
  });

  it('gives a figure it does not know a chart titled by its identifier alone', () => {
    const records = [benchRecord('abc1234', { ...NEWEST_FIGURES, brand_new_figure: 3 })];
    const other = buildReportData(records, 'quick', 'h', { kind: 'no-git', reason: 'git is not installed' }).charts.find((chart) => chart.section === 'Other');
    assert.equal(other?.title, 'brand_new_figure');
  });
});

describe('bench report page', () => {
  const html = renderReport(buildReportData(history(), 'quick', 'bench/history.jsonl', CHECKED_OUT));

  it('opens offline: nothing is loaded from elsewhere', () => {
    assert.ok(!/<(script|link|img)[^>]+(src|href)=["']?(https?:)?\/\//i.test(html), 'a script, link or image loads from elsewhere');
    assert.ok(html.includes('<section id="headline"'), 'no headline section');
  });

  it('carries the headline and the notices in its data', () => {
    assert.ok(html.includes('68 % of the no-crypto ceiling'), 'the headline is missing');
    assert.ok(html.includes('5 commits behind the checked-out bc7d9a4'), 'the checkout notice is missing');
  });
});
