/**
 * Postfix's queue id from the topmost Received field (src/mime/received.ts), for the log line only.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { postfixQueueIdOf } from '../../src/mime/received.js';
import { fieldsOf } from './read.js';

const queueIdOf = async (header: string) => postfixQueueIdOf(await fieldsOf(header));

describe('postfixQueueIdOf', () => {
  it('reads the id of mail Postfix received over SMTP, folded as Postfix folds it', async () => {
    const received =
      'Received: from [127.0.0.1] (localhost [127.0.0.1])\r\n\tby mx.example.test (Postfix) with ESMTP id 9A21720C16D\r\n\tfor <carol@example.test>; Fri,  4 Dec 2026 16:51:49 +0000 (UTC)\r\n';
    assert.equal(await queueIdOf(received), '9A21720C16D');
  });

  it('reads the id of locally submitted mail ("from userid", no "with")', async () => {
    assert.equal(await queueIdOf('Received: by mx.example.test (Postfix, from userid 0)\r\n\tid CEF6720C16F; Fri,  4 Dec 2026 16:51:49 +0000 (UTC)\r\n'), 'CEF6720C16F');
  });

  it('reads a long queue id, and one after a TLS comment', async () => {
    const tls =
      'Received: from client.example.net (client.example.net [192.0.2.7])\r\n' +
      '\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n' +
      '\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n' +
      '\t(No client certificate requested)\r\n' +
      '\tby mx.example.test (Postfix) with ESMTPS id 4Q1x2Y3zKLz9rWm\r\n' +
      '\tfor <alice@example.test>; Fri,  4 Dec 2026 16:51:49 +0000 (UTC)\r\n';
    assert.equal(await queueIdOf(tls), '4Q1x2Y3zKLz9rWm');
  });

  it('reads the topmost Received field only', async () => {
    const header =
      'Received: from relay.example.org by gw.example.test with ESMTP id 1abcDE-000001-XY; Fri, 4 Dec 2026 16:51:50 +0000\r\n' +
      'Received: from a by mx.example.test (Postfix) with ESMTP id 9A21720C16D; Fri, 4 Dec 2026 16:51:49 +0000\r\n';
    assert.equal(await queueIdOf(header), undefined, 'the topmost one is not Postfix’s');
    const swapped =
      'Received: from a by mx.example.test (Postfix) with ESMTP id 9A21720C16D; Fri, 4 Dec 2026 16:51:49 +0000\r\n' +
      'Received: by other.example.test (Postfix) with ESMTP id 1111111111; Fri, 4 Dec 2026 16:51:48 +0000\r\n';
    assert.equal(await queueIdOf(swapped), '9A21720C16D');
  });

  it('yields nothing without a Received field, or from one Postfix did not write', async () => {
    assert.equal(await queueIdOf('Subject: s\r\n'), undefined);
    for (const received of [
      'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000',
      'Received: from a by mx.example.org (Exim 4.96) with esmtp id 1abcDE-000001-XY',
      'Received: from a by mx.example.org with ESMTP id 9A21720C16D',
      'Received: from a (Postfix) by mx.example.org with ESMTP id 9A21720C16D',
      'Received: by mx.example.org (Postfix) with ESMTP id SHORT',
      'Received: by mx.example.org (Postfix) with ESMTP id 9A21-720C16D',
    ]) {
      assert.equal(await queueIdOf(`${received}\r\n`), undefined, received);
    }
  });
});
