/**
 * `lacre inbox import-soledad DIR`: a Soledad server's blob directory brought into this box (docs/incoming-box.md,
 * "Moving a Soledad server's blobs into Lacre"). Soledad keeps `{DIR}/{uuid}/{namespace}/{id[0]}/{id[0:3]}/
 * {id[0:6]}/{id}`, with `{id}.flags` (a JSON list), `{id}.deleted` tombstones and transient `{id}.lock` links beside.
 * The bytes are copied unchanged (an MX blob already carries the framing Lacre writes), each with its row: its
 * state from the flags, its arrival from the file's mtime. Run with the box stopped: it takes the blob storage.
 */
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { INCOMING_NAMESPACE } from '../config/schema.js';
import type { Database } from '../db/types.js';
import { FRAMING_BYTES, readFraming, SCHEME_EXTERNAL } from '../soledad/preamble.js';
import { BlobMetadata, type ImportedBlob } from './metadata.js';
import { BLOB_ID, NAMESPACE } from './requests.js';
import { FilesystemBlobStorage } from './storage.js';
import { BoxUserStore, canonicalUserId } from './users.js';

export interface SoledadImportSummary {
  imported: number;
  /** Already in this box (an earlier run): left alone. */
  present: number;
  /** Deleted in Soledad (`{id}.deleted` without the blob): nothing to bring. */
  tombstones: number;
  /** Directories under DIR that cannot be a Lacre user (not a lower-case canonical UUID), not imported. */
  skippedUsers: string[];
  /** Users imported who have no address or token here yet: nobody can read their box until they do. */
  usersWithoutAccess: string[];
  /** Files whose id or namespace Lacre cannot hold, with the reason. */
  skippedFiles: string[];
}

interface SoledadBlob {
  id: string;
  path: string;
}

export async function importSoledadBlobs(config: Pick<Config, 'incoming_box'>, db: Database, sourceDir: string): Promise<SoledadImportSummary> {
  const box = config.incoming_box;
  const storage = new FilesystemBlobStorage(box.blobs_path);
  await storage.start();
  const summary: SoledadImportSummary = { imported: 0, present: 0, tombstones: 0, skippedUsers: [], usersWithoutAccess: [], skippedFiles: [] };
  try {
    const metadata = new BlobMetadata(db, box.processing_threshold_seconds);
    const users = new BoxUserStore(db);
    for (const directory of await directories(sourceDir)) {
      const user = canonicalUserId(directory);
      if (user === undefined) {
        summary.skippedUsers.push(directory);
        continue;
      }
      const before = summary.imported;
      for (const namespace of await directories(join(sourceDir, directory))) {
        if (!NAMESPACE.test(namespace)) {
          summary.skippedFiles.push(`${directory}/${namespace}: not a namespace Lacre can hold`);
          continue;
        }
        for await (const blob of soledadBlobs(join(sourceDir, directory, namespace), summary)) {
          const key = { user, namespace, id: blob.id };
          if (!BLOB_ID.test(blob.id)) {
            summary.skippedFiles.push(`${directory}/${namespace}/${blob.id}: an id Lacre cannot hold ([A-Za-z0-9_.-], at most 128, not starting with a dot)`);
            continue;
          }
          if (await metadata.get(key)) {
            summary.present++;
            continue;
          }
          const described = await describe(blob.path, namespace);
          const object = await storage.write(key, createReadStream(blob.path));
          if (await metadata.insertImported(key, { ...object, framed: described.framed }, described.imported)) summary.imported++;
          else {
            await storage.remove(key, object.name);
            summary.present++;
          }
        }
      }
      if (summary.imported > before && !(await users.exists(user))) summary.usersWithoutAccess.push(user);
    }
    return summary;
  } finally {
    storage.close();
  }
}

/** The blobs under one namespace's sharded directories; tombstones of deleted ones are counted. */
async function* soledadBlobs(dir: string, summary: SoledadImportSummary): AsyncGenerator<SoledadBlob> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* soledadBlobs(path, summary);
    else if (entry.isFile() && !entry.name.includes('.')) yield { id: entry.name, path };
    else if (entry.isFile() && entry.name.endsWith('.deleted')) summary.tombstones++;
  }
}

/** How Lacre records a Soledad blob: MX deliveries are framed OpenPGP messages, anything else is the client's own. */
async function describe(path: string, namespace: string): Promise<{ framed: boolean; imported: ImportedBlob }> {
  const { mtime } = await stat(path);
  const framed = namespace === INCOMING_NAMESPACE && (await startsWithIncomingFraming(path));
  const flags = await readFlags(`${path}.flags`);
  const state = flags.list.includes('PROCESSED') ? 'PROCESSED' : flags.list.includes('FAILED') ? 'FAILED' : 'PENDING';
  return {
    framed,
    imported: {
      scheme: framed ? 'openpgp' : 'raw',
      // Soledad's PROCESSING is no one's reservation here: the blob is PENDING again.
      state,
      createdAt: mtime,
      ...(state === 'PENDING' ? {} : { processedAt: flags.changedAt ?? mtime }),
    },
  };
}

async function startsWithIncomingFraming(path: string): Promise<boolean> {
  const file = await open(path, 'r');
  try {
    const head = Buffer.alloc(FRAMING_BYTES);
    const { bytesRead } = await file.read(head, 0, head.length, 0);
    return readFraming(head.subarray(0, bytesRead))?.preamble.scheme === SCHEME_EXTERNAL;
  } catch {
    return false;
  } finally {
    await file.close();
  }
}

/** The flags Soledad kept beside a blob (none when there is no such file, or it is not a JSON list of strings). */
async function readFlags(path: string): Promise<{ list: string[]; changedAt?: Date }> {
  try {
    const [text, { mtime }] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    const parsed: unknown = JSON.parse(text);
    return { list: Array.isArray(parsed) ? parsed.filter((flag): flag is string => typeof flag === 'string') : [], changedAt: mtime };
  } catch {
    return { list: [] };
  }
}

async function directories(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries.filter((entry) => entry.isDirectory() && !entry.name.startsWith('.')).map((entry) => entry.name);
}
