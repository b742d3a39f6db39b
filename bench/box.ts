/**
 * The Incoming Box bench: `node dist/bench/box.js [--quick] [--json FILE|-] [--embedded]`. See bench/README.md.
 *
 * Starts `lacre inbox serve` on a fresh database and measures delivery throughput into it through Lacre's own
 * delivery client (4 KiB and 1 MiB bodies, 10 in flight), then listing latency for a user holding 100 000 blobs.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { checkDelivered, LISTINGS, measureDelivery, measureListings, type DeliveryLoad } from './box-measure.js';
import { createBoxStore, createBoxUser, fillBlobs, startBox, type BoxBenchStore, type BoxProcess } from './box-setup.js';
import { BenchLifecycle } from './lifecycle.js';
import { formatTable, newRecord, recordTitle, writeRecord, type BenchRecord } from './record.js';
import { Samples } from './stats.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Settings {
  mode: 'quick' | 'full';
  embedded: boolean;
  concurrency: number;
  rounds: number;
  loads: DeliveryLoad[];
  listedBlobs: number;
  listRequests: number;
  /** The whole run fails past this: every loop is bounded in count and in time. */
  deadlineMs: number;
}

function readSettings(): { settings: Settings; jsonFile: string | undefined } {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      embedded: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/box.js [--quick] [--json FILE|-] [--embedded]\n');
    process.exit(0);
  }
  const quick = values.quick === true;
  const rounds = quick ? 4 : 5;
  const settings: Settings = {
    mode: quick ? 'quick' : 'full',
    embedded: values.embedded === true,
    concurrency: 10,
    rounds,
    // Totals: 2 000 / 10 000 small and 100 / 500 big measured PUTs.
    loads: [
      { name: '4k', bodyBytes: 4 * KiB, perRound: (quick ? 2_000 : 10_000) / rounds, warmup: 500 },
      { name: '1m', bodyBytes: MiB, perRound: (quick ? 100 : 500) / rounds, warmup: 10 },
    ],
    listedBlobs: 100_000,
    listRequests: quick ? 10 : 20,
    deadlineMs: quick ? 300_000 : 1_800_000,
  };
  return { settings, jsonFile: values.json };
}

const bench = new BenchLifecycle('box bench', 10_000);
const progress = bench.progress;

async function main(): Promise<void> {
  const { settings, jsonFile } = readSettings();
  const deadline = bench.startedAt + settings.deadlineMs;
  const samples = new Samples();
  let store: BoxBenchStore | undefined;
  let box: BoxProcess | undefined;
  let removeStore: (() => Promise<void>) | undefined;
  bench.onCleanup(async () => removeStore?.());
  try {
    store = await createBoxStore({ embedded: settings.embedded, register: (remove) => (removeStore = remove) });
    progress(`${settings.mode} run, database ${store.kind}`);
    // Users, tokens and the bulk rows before the box starts: an embedded database is open in one process at a time.
    const deliveryUser = await createBoxUser(store, 'bench@example.test');
    const listUser = await createBoxUser(store, 'bulk@example.test');
    const fillStarted = performance.now();
    const filled = await fillBlobs(store, listUser.id, settings.listedBlobs);
    progress(`${filled.count} blob rows for ${listUser.address} in ${((performance.now() - fillStarted) / 1000).toFixed(1)} s`);

    box = await startBox(store);
    const started = box;
    bench.onCleanup(() => started.stop());
    progress(`lacre inbox serve on 127.0.0.1:${box.port}`);

    progress(`delivery: ${settings.concurrency} in flight, ${settings.rounds} rounds of ${settings.loads.map((l) => `${l.perRound} x ${l.name}`).join(', ')}`);
    const delivered = await measureDelivery(box, deliveryUser, settings.loads, { concurrency: settings.concurrency, rounds: settings.rounds, deadline }, samples, progress);
    await checkDelivered(box, deliveryUser, delivered);
    await checkBlobFiles(store, deliveryUser.id, delivered.blobs);

    progress(`listings: ${filled.count} PENDING blobs, ${settings.listRequests} requests each`);
    await measureListings(box, listUser, filled, { requests: settings.listRequests, deadline }, samples, progress);

    const code = await box.stop();
    if (code !== 0) throw new Error(`lacre inbox serve exited ${code} on SIGTERM`);
  } finally {
    if (box) reportBoxOutput(box);
    await bench.cleanUp();
  }
  progress(`done in ${((Date.now() - bench.startedAt) / 1000).toFixed(1)} s`);
  report(buildRecord(settings, store!.kind, samples), jsonFile);
}

/** One file per delivered blob under blobs_path/{user}/MX (where deliveries land): nothing lost, nothing left over. */
async function checkBlobFiles(store: BoxBenchStore, user: string, blobs: number): Promise<void> {
  const files = await readdir(join(store.blobsPath, user, 'MX'));
  if (files.length !== blobs) throw new Error(`delivery check: ${files.length} blob files for ${blobs} delivered blobs`);
}

/** The box runs at log level warn: anything it wrote is worth seeing next to the figures. */
function reportBoxOutput(box: BoxProcess): void {
  const output = box.output().trim();
  if (output !== '') progress(`lacre inbox serve wrote (warn and above):\n${output}`);
}

function buildRecord(settings: Settings, database: BenchRecord['database'], samples: Samples): BenchRecord {
  const recorded = {
    bench: 'incoming-box',
    concurrency: settings.concurrency,
    rounds: settings.rounds,
    deliveries: settings.loads.map(({ name, bodyBytes, perRound, warmup }) => ({ name, body_bytes: bodyBytes, per_round: perRound, warmup })),
    listed_blobs: settings.listedBlobs,
    list_requests: settings.listRequests,
    listings: Object.fromEntries(LISTINGS.map(({ name, query }) => [name, `namespace=mx${query}`])),
  };
  return newRecord(settings.mode, database, recorded, samples.figures());
}

function report(record: BenchRecord, jsonFile: string | undefined): void {
  const header = `${recordTitle('Lacre Incoming Box bench', record)}\n  delivery: median over the rounds [min – max]; listings: p50 [min – max] over the requests\n`;
  const table = header + formatTable(record.figures);
  writeRecord(record, table, jsonFile);
}

bench.run(main);
