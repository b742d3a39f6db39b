import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { CipherSpool } from '../../src/filter/spool.js';

describe('CipherSpool', () => {
  it('keeps small ciphertext in memory and spills the rest to a 0600 file, read back whole', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lacre-spool-test-'));
    try {
      const spool = new CipherSpool(dir, 1000);
      const parts = [Buffer.alloc(600, 1), Buffer.alloc(600, 2), Buffer.alloc(5000, 3)];
      for (const part of parts) spool.write(part);
      await new Promise<void>((resolve, reject) => spool.end((error?: Error | null) => (error ? reject(error) : resolve())));
      const names = await readdir(dir);
      assert.equal(names.length, 1);
      assert.equal((await stat(join(dir, names[0]!))).mode & 0o777, 0o600);
      assert.deepEqual(await buffer(spool.reader()), Buffer.concat(parts));
      await spool.dispose();
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('seals what it spills: the file never holds the bytes written, the reader gives them back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lacre-spool-test-'));
    try {
      const spool = new CipherSpool(dir, 64);
      const header = Buffer.from('Subject: the merger with ACME\r\nFrom: ceo@example.org\r\n\r\n');
      const body = Buffer.from('-----BEGIN PGP MESSAGE-----\r\n'.repeat(2000));
      spool.write(header);
      spool.write(body);
      await new Promise<void>((resolve, reject) => spool.end((error?: Error | null) => (error ? reject(error) : resolve())));
      const [name] = await readdir(dir);
      const onDisk = await readFile(join(dir, name!));
      assert.equal(onDisk.length, header.length + body.length);
      assert.equal(onDisk.includes('Subject'), false);
      assert.equal(onDisk.includes('BEGIN PGP'), false);
      assert.deepEqual(await buffer(spool.reader()), Buffer.concat([header, body]));
      assert.deepEqual(await buffer(spool.reader()), Buffer.concat([header, body]), 'every reader starts from the beginning');
      await unlink(join(dir, name!));
      await assert.rejects(buffer(spool.reader()), /ENOENT/, 'a file that cannot be read fails the reader');
      await spool.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('disposed while file writes are in flight (an aborted message): no error escapes, the file is gone', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lacre-spool-test-'));
    const escaped: unknown[] = [];
    const record = (error: unknown) => escaped.push(error);
    process.on('uncaughtException', record);
    try {
      for (let round = 0; round < 20; round++) {
        const spool = new CipherSpool(dir, 1024);
        spool.on('error', () => undefined);
        for (let i = 0; i < 8; i++) spool.write(Buffer.alloc(256 * 1024, i));
        if (round % 2 === 0) await new Promise((resolve) => setTimeout(resolve, round % 3));
        const disposed = spool.dispose();
        spool.write(Buffer.alloc(256 * 1024)); // the encryption still pushing when the message is aborted
        await disposed;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(escaped, []);
      assert.deepEqual(await readdir(dir), []);
    } finally {
      process.off('uncaughtException', record);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
