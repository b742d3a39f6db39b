import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import * as openpgp from 'openpgp';
import { processMessage, type FilterOptions, type MessageInput } from '../../src/filter/pipeline.js';
import type { BoxDownstream, BoxScheme, Downstream, OutboundEnvelope, RecipientRejections } from '../../src/filter/ports.js';
import type { RoutedRecipient } from '../../src/filter/plan.js';
import { createGpgHome, decrypt, encryptWithGpg, generateKey, type GpgHome } from '../helpers/gpg.js';
import { armoredBlock, contentEntity, corpus, inlinePgpMessage, pgpMimeMessage, smimeMessage } from '../helpers/corpus.js';
import { createSmimeIdentity, opensslAvailable, smimeMessage as opensslMessage, type SmimeIdentity } from '../helpers/smime.js';

const crlf = (lines: string[]) => Buffer.from(lines.join('\r\n'), 'latin1');
const HEAD = ['From: sender@example.net', 'To: alice@example.test', 'Subject: meeting', 'MIME-Version: 1.0'];
const PLAINTEXT = ['Content-Type: text/plain; charset=utf-8', '', 'Secret meeting at noon.', ''];

/** multipart/encrypted (RFC 3156) with this second part, and any further parts after it. */
function pgpMime(secondPart: string[], ...moreParts: string[][]): Buffer {
  return crlf([
    ...HEAD,
    'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b1"',
    '',
    'This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)',
    '--b1',
    'Content-Type: application/pgp-encrypted',
    'Content-Description: PGP/MIME version identification',
    '',
    'Version: 1',
    '',
    '--b1',
    'Content-Type: application/octet-stream; name="encrypted.asc"',
    '',
    ...secondPart,
    ...moreParts.flatMap((part) => ['--b1', ...part]),
    '--b1--',
    '',
  ]);
}

const inline = (body: string[]) => crlf([...HEAD, 'Content-Type: text/plain; charset=us-ascii', '', ...body, '']);
const lines = (armor: Buffer | string) => armor.toString().trimEnd().split(/\r?\n/);

class Relay implements Downstream {
  readonly received: Array<{ to: readonly string[]; data: Buffer }> = [];
  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    this.received.push({ to: envelope.to, data: Buffer.concat(await raw.toArray()) });
    return new Map();
  }
}

class Box implements BoxDownstream {
  readonly stored: Array<{ scheme: BoxScheme; data: Buffer }> = [];
  async put(_user: string, _blobId: string, scheme: BoxScheme, raw: Readable): Promise<void> {
    this.stored.push({ scheme, data: Buffer.concat(await raw.toArray()) });
  }
}

const USER = '11111111-1111-4111-8111-111111111111';
const base: FilterOptions = { maxHeaderSize: 65536, groupRecipients: false, spoolMemory: 1 << 20, boxScheme: 'openpgp', boxNamespace: 'mx' };
const PATHS = [['in memory', undefined], ['streamed', -1]] as const;

describe('already encrypted: only what is encrypted in its structure passes through', () => {
  let home: GpgHome;
  let recipients: RoutedRecipient[];
  let smime: SmimeIdentity | undefined;
  /** Messages built in before(): real ciphertext from GnuPG, openssl and Lacre itself. */
  const genuine = new Map<string, Buffer>();
  const fakes = new Map<string, Buffer>();

  /** Alice has a key and is reinjected; Bob has a key and an Incoming Box. */
  const send = async (raw: Buffer, bufferLimit: number | undefined) => {
    const relay = new Relay();
    const box = new Box();
    const input: MessageInput = { from: 'sender@example.net', recipients, body: Readable.from(chunks(raw)), use8BitMime: true, queueId: 'Q1' };
    const result = await processMessage(input, { relay, box }, { ...base, bufferLimit });
    assert.ok(result.results.every((r) => !r.error));
    assert.equal(relay.received.length, 1);
    assert.equal(box.stored.length, 1);
    return { result, relayed: relay.received[0]!.data, boxed: box.stored[0]! };
  };

  before(async () => {
    home = await createGpgHome();
    const alice = await generateKey(home, { email: 'alice@example.test' });
    const bob = await generateKey(home, { email: 'bob@example.test', algo: 'rsa3072' });
    const keyOf = (armoredKey: string) => openpgp.readKey({ armoredKey });
    recipients = [
      { address: 'alice@example.test', lookup: { kind: 'usable', address: 'alice@example.test', style: 'mime', keys: [await keyOf(alice.publicArmored)] } },
      { address: 'bob@example.test', lookup: { kind: 'usable', address: 'bob@example.test', style: 'mime', keys: [await keyOf(bob.publicArmored)] }, boxUser: USER },
    ];
    const entity = crlf(PLAINTEXT);
    const gpgArmor = lines(await encryptWithGpg(home, ['alice@example.test', 'bob@example.test'], entity));
    const bigArmor = lines(await encryptWithGpg(home, ['alice@example.test'], Buffer.concat([entity, randomBytes(600 * 1024)])));

    genuine.set('PGP/MIME by GnuPG', pgpMime(gpgArmor));
    genuine.set('PGP/MIME by GnuPG, 600 KiB (streamed past the window)', pgpMime(bigArmor));
    genuine.set('inline PGP by GnuPG', inline(gpgArmor));
    genuine.set('PGP/MIME, symmetric (test corpus)', pgpMimeMessage);
    genuine.set('inline PGP, symmetric (test corpus)', inlinePgpMessage);
    genuine.set('S/MIME EnvelopedData (test corpus)', smimeMessage);
    const ownCopies = await lacreCopies(corpus[1]!.raw);
    genuine.set('PGP/MIME made by Lacre', ownCopies.mime);
    genuine.set('inline PGP made by Lacre', ownCopies.inline);

    fakes.set('multipart/encrypted wrapping plaintext', pgpMime(PLAINTEXT));
    fakes.set('multipart/encrypted whose armor holds no OpenPGP packets', pgpMime(lines(armorOf('Secret meeting at noon.'))));
    fakes.set('multipart/encrypted with real ciphertext and a third, plaintext part', pgpMime(gpgArmor, PLAINTEXT));
    fakes.set('inline armor lines around plaintext', inline(['-----BEGIN PGP MESSAGE-----', '', 'Secret meeting at noon.', '-----END PGP MESSAGE-----']));
    fakes.set('inline armor of base64 plaintext', inline(lines(armorOf('Secret meeting at noon. '.repeat(20)))));
    fakes.set('inline: real ciphertext, then plaintext', inline([...gpgArmor, '', 'Secret meeting at noon.']));
    fakes.set('inline: real ciphertext cut short', inline(gpgArmor.slice(0, 3)));
    fakes.set('application/pgp-encrypted around plaintext', crlf([...HEAD, 'Content-Type: application/pgp-encrypted', '', 'Secret meeting at noon.', '']));
    fakes.set(
      'S/MIME enveloped-data header around plaintext',
      crlf([...HEAD, 'Content-Type: application/pkcs7-mime; smime-type=enveloped-data', 'Content-Transfer-Encoding: base64', '', Buffer.from('Secret meeting at noon.').toString('base64'), '']),
    );

    if (await opensslAvailable()) {
      smime = await createSmimeIdentity('alice@example.test');
      genuine.set('S/MIME EnvelopedData by openssl', await opensslMessage(smime, 'enveloped', entity));
      genuine.set('S/MIME AuthEnvelopedData by openssl', await opensslMessage(smime, 'auth-enveloped', entity));
      const signed = (await opensslMessage(smime, 'signed', entity)).toString('latin1');
      fakes.set('S/MIME signed-only, labelled enveloped-data', Buffer.from(signed.replace(/smime-type=signed-data/, 'smime-type=enveloped-data'), 'latin1'));
    }
  });
  after(async () => {
    await home.remove();
    await smime?.remove();
  });

  /** Lacre's own PGP/MIME and inline copies of a message. */
  async function lacreCopies(raw: Buffer): Promise<{ mime: Buffer; inline: Buffer }> {
    const relay = new Relay();
    const [alice] = recipients;
    const inlineAlice: RoutedRecipient = { address: 'carol@example.test', lookup: { ...(alice!.lookup as Extract<RoutedRecipient['lookup'], { kind: 'usable' }>), style: 'inline' } };
    const plainText = crlf(['From: sender@example.net', 'To: carol@example.test', 'Content-Type: text/plain', '', 'Secret.', '']);
    await processMessage({ from: 's@example.net', recipients: [alice!], body: Readable.from([raw]), use8BitMime: true }, { relay }, base);
    await processMessage({ from: 's@example.net', recipients: [inlineAlice], body: Readable.from([plainText]), use8BitMime: true }, { relay }, base);
    assert.match(relay.received[1]!.data.toString('latin1'), /\r\n\r\n-----BEGIN PGP MESSAGE-----/);
    return { mime: relay.received[0]!.data, inline: relay.received[1]!.data };
  }

  for (const [path, bufferLimit] of PATHS) {
    it(`${path}: real ciphertext passes untouched, to a keyed recipient and into a box as raw`, async (t) => {
      assert.ok(genuine.size >= 8);
      for (const [name, raw] of genuine) await t.test(name, async () => {
        const { result, relayed, boxed } = await send(raw, bufferLimit);
        assert.ok(result.alreadyEncrypted, `${name}: recognised as encrypted`);
        assert.equal(result.plan.actions.get('alice@example.test'), 'already-encrypted', name);
        assert.ok(relayed.equals(raw), `${name}: relayed byte for byte`);
        assert.equal(boxed.scheme, 'raw', name);
        assert.ok(boxed.data.equals(raw), `${name}: boxed byte for byte`);
      });
    });

    it(`${path}: a header or armor that only claims encryption is encrypted, and decrypts to the original`, async (t) => {
      assert.ok(fakes.size >= 9);
      for (const [name, raw] of fakes) await t.test(name, async () => {
        const { result, relayed, boxed } = await send(raw, bufferLimit);
        assert.equal(result.alreadyEncrypted, undefined, name);
        assert.equal(result.plan.actions.get('alice@example.test'), 'encrypted-mime', name);
        assert.deepEqual(await decrypt(home, armoredBlock(relayed)), contentEntity(raw), `${name}: relayed copy decrypts to the content entity`);
        assert.equal(boxed.scheme, 'openpgp', `${name}: the box copy is encrypted, not raw`);
        assert.deepEqual(await decrypt(home, boxed.data), raw, `${name}: box copy decrypts to the whole message`);
      });
    });
  }
});

/** Armor around bytes that are not OpenPGP packets. */
function armorOf(text: string): string {
  const base64 = Buffer.from(text).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN PGP MESSAGE-----\n\n${base64}\n-----END PGP MESSAGE-----\n`;
}

/** The message in 4 KiB chunks, as a listener hands it over. */
function chunks(raw: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < raw.length; i += 4096) out.push(raw.subarray(i, i + 4096));
  return out;
}
