import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { simpleParser } from 'mailparser';
import { loadConfig } from '../../src/config/load.js';
import { Relay } from '../../src/delivery/reinject.js';
import { createLogger } from '../../src/log/logger.js';
import { catalogs } from '../../src/web/i18n.js';
import { composeMail, createMailer, MailNotSentError } from '../../src/web/mailer.js';
import { noticeMail } from '../../src/web/notices.js';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

const SENDER = 'keys@example.org';

describe('the mails Lacre sends', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let sink: SmtpSink;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.org' });
    sink = await SmtpSink.start({ rcptReply: (address) => (address.startsWith('refused') ? { code: 550, message: '5.1.1 no such user' } : undefined) });
  });
  after(async () => {
    await sink.stop();
    await home.remove();
  });

  function mailerTo(port: number) {
    const config = loadConfig({ env: { LACRE_WEB_SENDER: SENDER, LACRE_RELAY_PORT: String(port) } });
    const relay = new Relay(config.relay, undefined, createLogger('silent'));
    return { mailer: createMailer(config, relay, createLogger('silent')), relay };
  }

  it('go through the relay PGP/MIME-encrypted to the key concerned, from web.sender, marked auto-generated, in the user\u2019s language', async () => {
    const { mailer, relay } = mailerTo(sink.port);
    const t = catalogs().translator('es');
    const notice = noticeMail('confirm-publish', t, { email: 'alice@example.org', fingerprint: alice.fingerprint, link: 'https://keys.example.org/confirm/TOKEN' });
    try {
      await mailer.send({ to: 'alice@example.org', key: alice.publicArmored, subject: notice.subject, lang: 'es', body: { text: notice.text } });
    } finally {
      relay.close();
    }
    const sent = sink.messages.at(-1)!;
    assert.equal(sent.from, SENDER);
    assert.deepEqual(sent.to, ['alice@example.org']);
    const outer = await simpleParser(sent.data);
    assert.equal(outer.headers.get('auto-submitted'), 'auto-generated');
    assert.equal(outer.subject, 'Confirme su clave OpenPGP para alice@example.org');
    assert.match(sent.data.toString('latin1'), /^Content-Type: multipart\/encrypted;/im);
    assert.deepEqual(await listPacketsKeyIds(home, sent.data), [alice.encryptionKeyId]);
    const inner = await simpleParser(await decrypt(home, sent.data));
    assert.match(inner.text ?? '', /https:\/\/keys\.example\.org\/confirm\/TOKEN/);
    assert.match(inner.text ?? '', /Para confirmar, abra este enlace/);
  });

  it('fail with MailNotSentError when the relay refuses or is not there, so the user is told to try again', async () => {
    const refused = mailerTo(sink.port);
    const mail = { to: 'refused@example.org', key: alice.publicArmored, subject: 's', lang: 'en', body: { text: 'x' } } as const;
    await assert.rejects(refused.mailer.send(mail), MailNotSentError);
    refused.relay.close();
    const down = mailerTo(1);
    await assert.rejects(down.mailer.send({ ...mail, to: 'alice@example.org' }), MailNotSentError);
    down.relay.close();
  });

  it('refuse to send a mail meant to be encrypted when the key cannot encrypt', async () => {
    const { mailer, relay } = mailerTo(sink.port);
    const before = sink.messages.length;
    await assert.rejects(mailer.send({ to: 'alice@example.org', key: 'not a key', subject: 's', lang: 'en', body: { text: 'x' } }), MailNotSentError);
    relay.close();
    assert.equal(sink.messages.length, before);
  });
});

describe('composeMail', () => {
  it('writes CRLF lines under 78 octets with ASCII header fields', () => {
    const text = `${'ñandú '.repeat(40)}\nline two\n`;
    const bytes = composeMail({ to: 'a@example.org', key: null, subject: 'Confirmación', lang: 'es', body: { text } }, { from: SENDER, date: new Date(0), messageId: '<m@x>' });
    const lines = bytes.toString('latin1').split('\r\n');
    assert.ok(lines.every((line) => line.length <= 78 && !line.includes('\n')));
    assert.ok([...bytes].every((byte) => byte < 0x80));
    assert.match(bytes.toString(), /^Subject: =\?UTF-8\?Q\?Confirmaci=C3=B3n\?=\r$/m);
    assert.match(bytes.toString(), /^Content-Language: es\r$/m);
  });
});
