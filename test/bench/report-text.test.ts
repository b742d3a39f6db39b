import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_HISTORY, readHistory, type BenchRecord } from '../../bench/record.js';
import { ceilingMoves, checkoutNotice, describeFigure, headline, noiseSummary, recordLabel } from '../../bench/report-text.js';
import { benchRecord, NEWEST_FIGURES } from './records.js';

const text = (sentences: Array<{ text: string }>) => sentences.map((sentence) => sentence.text).join(' ');

describe('the report names each figure in words', () => {
  it('describes load, ratio, latency, recipient, lookup and big-message figures', () => {
    assert.equal(describeFigure('lacre_cv25519_c10_ratio_to_ceiling'), 'ratio to pass-through, Lacre with a cv25519 key, 10 sessions');
    assert.equal(describeFigure('passthrough_c1_msgs_per_s'), 'messages/s, pass-through (the no-crypto ceiling), 1 session');
    assert.equal(describeFigure('lacre_rsa3072_c50_p99_ms'), 'p99 latency (the slowest 1 %), Lacre with an RSA-3072 key, 50 sessions');
    assert.equal(describeFigure('sink_c10_headroom_over_ceiling'), "sink's headroom over the pass-through, 10 sessions");
    assert.equal(describeFigure('recipients_5_ms_per_recipient'), 'wall ms per recipient, 5 keyed recipients per message');
    assert.equal(describeFigure('recipient_extra_cpu_ms'), 'CPU ms one more keyed recipient adds to a message');
    assert.equal(describeFigure('key_lookup_warm_us'), 'key lookup answered from the cache');
    assert.equal(describeFigure('big_200mb_lacre_peak_rss_mb'), 'peak memory (RSS) of lacre serve, 200 MB message');
    assert.equal(describeFigure('big_10mb_passthrough_mb_per_s'), 'MB/s, 10 MB message, pass-through');
  });

  it('has words for every figure the history holds', () => {
    const figures = new Set(readHistory(DEFAULT_HISTORY).flatMap((record) => Object.keys(record.figures)));
    assert.ok(figures.size > 50, `history holds ${figures.size} figures`);
    assert.deepEqual([...figures].filter((figure) => describeFigure(figure) === null), []);
  });

  it('has none for a figure it does not know', () => {
    assert.equal(describeFigure('lacre_c10_something_new'), null);
  });
});

describe('what the newest record measured, in sentences', () => {
  const newest = benchRecord('0b090e6', NEWEST_FIGURES, { subject: 'Key packets go to a worker' });

  it('says the rate at 10 sessions, on how many cores, and the share of the no-crypto ceiling', () => {
    const said = text(headline(newest, null));
    assert.match(said, /on 2 CPU cores \(AMD EPYC, 24 GB\)/);
    assert.match(said, /commit 0b090e6 \("Key packets go to a worker"\)/);
    assert.match(said, /At 10 SMTP sessions sending 4 KiB messages at once, Lacre encrypted about 1 070 messages\/s for a recipient with a cv25519 key, 68 % of the no-crypto ceiling/);
    assert.match(said, /managed about 1 230 messages\/s/);
    assert.match(said, /With an RSA-3072 key: about 1 200 messages\/s, 82 % of the ceiling\./);
  });

  it('says the big-message speed and peak memory, the lookup and recipient costs, and the targets', () => {
    const said = text(headline(newest, null));
    assert.match(said, /A 200 MB message went through Lacre at about 106 MB\/s, 78 % of the pass-through's 136 MB\/s/);
    assert.match(said, /memory peaked at 138 MB \(RSS\)/);
    assert.match(said, /among 100 000 addresses took about 2\.7 ms when not cached and 3\.2 µs from the cache/);
    assert.match(said, /Each extra keyed recipient of a message cost about 0\.27 ms of wall time and 0\.36 ms of CPU/);
    assert.match(said, /meets 5 of the 6 targets of issue 4; missed: MB\/s, 200 MB message, Lacre \(106, target ≥ 120\)\./);
  });

  it('names the figures each sentence draws on', () => {
    const sentence = headline(newest, null).find((s) => s.text.includes('cv25519 key, 68 %'));
    assert.deepEqual(sentence?.figures, ['lacre_cv25519_c10_msgs_per_s', 'lacre_cv25519_c10_ratio_to_ceiling', 'passthrough_c10_msgs_per_s']);
  });

  it('says that only the growth counts when the embedded database shares the process', () => {
    assert.match(text(headline({ ...newest, database: 'embedded' }, null)), /3\.3 MB more than just before \(the embedded database runs inside that process: only the growth speaks of Lacre\)\./);
    assert.doesNotMatch(text(headline(newest, null)), /only the growth/);
  });

  it('leaves out what a partial record did not measure', () => {
    const bigOnly = benchRecord('abc1234', { big_10mb_lacre_mb_per_s: 70, big_10mb_passthrough_mb_per_s: 100, big_10mb_lacre_ratio_to_ceiling: 0.7 });
    const said = text(headline(bigOnly, null));
    assert.match(said, /A 10 MB message went through Lacre at about 70 MB\/s, 70 % of the pass-through's 100 MB\/s\./);
    assert.doesNotMatch(said, /messages\/s|lookup|recipient|targets/);
  });

  it('warns, in the headline, when the ceiling itself moved by more than 30 %', () => {
    const said = text(headline(newest, { previousCommit: '8f6b8b7', changePct: -71.9, noise: true }));
    assert.match(said, /the no-crypto ceiling itself .* moved −72 % against the previous record \(8f6b8b7\).*machine noise/);
  });
});

describe('a ceiling that moved by more than 30 % marks machine noise', () => {
  const records = [1000, 1250, 1350, 900, 880].map((ceiling, i) => benchRecord(`c${i}`, { passthrough_c10_msgs_per_s: ceiling }));

  it('compares each record with the one before', () => {
    const moves = ceilingMoves(records);
    assert.equal(moves[0], null);
    assert.deepEqual(moves.map((move) => move?.noise ?? null), [null, false, false, true, false]);
    assert.equal(moves[3]?.previousCommit, 'c2');
    assert.equal(Math.round(moves[3]!.changePct), -33);
  });

  it('compares with the last record that measured the ceiling', () => {
    const partial = benchRecord('big', { big_10mb_lacre_mb_per_s: 70 });
    const moves = ceilingMoves([records[0]!, partial, benchRecord('late', { passthrough_c10_msgs_per_s: 1400 })]);
    assert.equal(moves[1], null);
    assert.deepEqual(moves[2], { previousCommit: 'c0', changePct: 40, noise: true });
  });

  it('lists the noisy records in words', () => {
    assert.equal(
      noiseSummary(records, ceilingMoves(records)),
      'Marked as machine noise (the no-crypto ceiling, passthrough_c10_msgs_per_s, moved more than 30 % against the record before): c3 (−33 % against c2).',
    );
    assert.equal(noiseSummary(records.slice(0, 3), ceilingMoves(records.slice(0, 3))), null);
  });

  it('names the eight newest noisy records and counts the older ones', () => {
    const seesaw = Array.from({ length: 11 }, (_, i) => benchRecord(`s${i}`, { passthrough_c10_msgs_per_s: i % 2 === 0 ? 1000 : 2000 }));
    const summary = noiseSummary(seesaw, ceilingMoves(seesaw)) ?? '';
    assert.match(summary, /before\): 2 earlier records, s3 \(\+100 % against s2\), s4 \(−50 % against s3\),/);
    assert.match(summary, /s10 \(−50 % against s9\)\.$/);
  });
});

describe('whether the newest record is the checked-out commit', () => {
  const clean = benchRecord('0b090e6', {});
  const dirty: BenchRecord = { ...clean, dirty: true };

  it('says so when it is', () => {
    const notice = checkoutNotice(clean, { kind: 'known', head: '0b090e6', same: true, ancestor: true, behind: 0, codeChanges: 0 });
    assert.deepEqual(notice, { level: 'ok', text: 'The newest record is from the checked-out commit, 0b090e6.' });
    assert.equal(checkoutNotice(dirty, { kind: 'known', head: '0b090e6', same: true, ancestor: true, behind: 0, codeChanges: 0 }).level, 'warn');
  });

  it('says which commit and how many commits behind, and whether the code changed since', () => {
    const behind = checkoutNotice(clean, { kind: 'known', head: 'bc7d9a4', same: false, ancestor: true, behind: 5, codeChanges: 2 });
    assert.equal(behind.level, 'warn');
    assert.equal(
      behind.text,
      'The newest record is not the checked-out commit: it is from 0b090e6, 5 commits behind the checked-out bc7d9a4; 2 of them change src/ (the code measured), so its figures may not describe the code as it is now.',
    );
    const docsOnly = checkoutNotice(clean, { kind: 'known', head: 'bc7d9a4', same: false, ancestor: true, behind: 1, codeChanges: 0 });
    assert.equal(docsOnly.level, 'info');
    assert.match(docsOnly.text, /from 0b090e6, 1 commit behind the checked-out bc7d9a4; none of them changes src\//);
  });

  it('says when the record is on another line of history, or unknown here', () => {
    assert.match(checkoutNotice(clean, { kind: 'known', head: 'bc7d9a4', same: false, ancestor: false, behind: 3, codeChanges: 1 }).text, /0b090e6, which is not an ancestor of the checked-out bc7d9a4/);
    assert.match(checkoutNotice(clean, { kind: 'unknown-commit', head: 'bc7d9a4' }).text, /0b090e6 is not in this repository/);
  });

  it('degrades gracefully without git', () => {
    const notice = checkoutNotice(clean, { kind: 'no-git', reason: 'git is not installed' });
    assert.deepEqual(notice, { level: 'info', text: 'Could not compare the newest record (0b090e6) with the checked-out commit: git is not installed.' });
  });
});

describe('record labels', () => {
  it('carry the commit, starred when the tree was dirty', () => {
    assert.equal(recordLabel(benchRecord('abc1234', {})), 'abc1234');
    assert.equal(recordLabel({ ...benchRecord('abc1234', {}), dirty: true }), 'abc1234*');
  });
});
