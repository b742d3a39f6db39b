/**
 * Mail to the WKS submission address is Lacre's own: the relay wrapper takes that recipient out of every copy and
 * hands the message to the WKS handler, which answers a key submission with a confirmation request (encrypted to the
 * submitted key) and publishes the key when a matching confirmation response comes back. Temporary failures
 * (database down, relay refusing the request mail, no submission key yet) reject the copy so that Postfix retries;
 * a bad submission is dropped with a log line that carries neither content nor nonce.
 */
import { PassThrough, pipeline, type Readable } from 'node:stream';
import { readKey, type PrivateKey } from 'openpgp';
import type { Config } from '../config/schema.js';
import { errorMessage, LacreError } from '../errors.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../filter/ports.js';
import { canonicalAddress } from '../keys/address.js';
import type { Logger } from '../log/logger.js';
import { WebError } from './errors.js';
import type { Catalogs } from './i18n.js';
import type { Mailer } from './mailer.js';
import type { KeyService } from './service.js';
import { wkdLocalPart } from './wkd-format.js';
import { confirmationRequestEntity, readWksMail, WKS_DRAFT_VERSION, WksMessageError, type WksMessage } from './wks.js';
import { loadSubmissionKey } from './wks-key.js';

/** Most bytes of one mail to the submission address: a key (keys.max_key_bytes) armored, encrypted and wrapped. */
export const WKS_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Most addresses of one submitted key that get a confirmation request (gpg-wks-client sends one). */
const MAX_ADDRESSES_PER_SUBMISSION = 5;

export interface WksIntake {
  /** web.wks_submission_address. */
  readonly address: string;
  /** Handles one mail; throws a LacreError only when it should be retried. */
  handle(message: Buffer): Promise<void>;
  readonly logger: Logger;
  readonly maxBytes?: number;
}

/** The relay, except that the submission address's copies go to the WKS handler. */
export function interceptSubmissions(relay: Downstream, intake: WksIntake): Downstream {
  const submission = comparable(intake.address);
  const maxBytes = intake.maxBytes ?? WKS_MAX_MESSAGE_BYTES;
  return {
    async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
      const others = envelope.to.filter((rcpt) => comparable(rcpt) !== submission);
      if (others.length === envelope.to.length) return relay.send(envelope, raw);
      if (others.length === 0) {
        await handleBounded(intake, await readBounded(raw, maxBytes));
        return new Map();
      }
      // Both: the relay streams its copy while the handler's bytes are kept (bounded); the handler runs only once
      // the relay accepted, so a retried copy does not ask twice.
      const { relayed, kept } = keepWhileRelaying(raw, maxBytes);
      const rejections = await relay.send({ ...envelope, to: others }, relayed);
      try {
        await handleBounded(intake, await kept);
        return rejections;
      } catch (error) {
        const refusal = error instanceof LacreError ? error : new LacreError(errorMessage(error), { cause: error });
        return new Map([...rejections, ...envelope.to.filter((rcpt) => !others.includes(rcpt)).map((rcpt) => [rcpt, refusal] as const)]);
      }
    },
  };
}

/** The stream for the relay, and the same bytes kept up to `maxBytes` (undefined beyond). */
function keepWhileRelaying(raw: Readable, maxBytes: number): { relayed: PassThrough; kept: Promise<Buffer | undefined> } {
  const relayed = new PassThrough();
  const chunks: Buffer[] = [];
  let size = 0;
  const kept = new Promise<Buffer | undefined>((resolve, reject) => {
    raw.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) chunks.push(chunk);
    });
    // pipeline: an input that fails fails the relay's copy too, instead of leaving it waiting.
    pipeline(raw, relayed, (error) => (error ? reject(error) : resolve(size <= maxBytes ? Buffer.concat(chunks) : undefined)));
  });
  kept.catch(() => undefined);
  return { relayed, kept };
}

/** The message, or undefined when it was larger than `maxBytes` (then read to its end and not kept). */
async function readBounded(raw: Readable, maxBytes: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of raw as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= maxBytes) chunks.push(chunk);
  }
  return size <= maxBytes ? Buffer.concat(chunks) : undefined;
}

async function handleBounded(intake: WksIntake, message: Buffer | undefined): Promise<void> {
  if (message === undefined) {
    intake.logger.warn({ wks: 'dropped', reason: `larger than ${intake.maxBytes ?? WKS_MAX_MESSAGE_BYTES} bytes` }, 'WKS mail dropped');
    return;
  }
  await intake.handle(message);
}

/** An address as the submission address is matched and WKS compares addresses: domain canonical, local part ASCII-lower-cased. */
function comparable(address: string): string {
  try {
    const canonical = canonicalAddress(address);
    const at = canonical.lastIndexOf('@');
    return `${wkdLocalPart(canonical.slice(0, at))}${canonical.slice(at)}`;
  } catch {
    return address.toLowerCase();
  }
}

export interface WksHandlerDeps {
  readonly config: Config;
  readonly service: Pick<KeyService, 'submitPending' | 'describeRequest' | 'confirm' | 'recentWksRequest'>;
  readonly mailer: Mailer;
  readonly catalogs: Catalogs;
  readonly logger: Logger;
}

/** The intake for web.wks_submission_address; undefined when WKS is off. */
export function createWksIntake(deps: WksHandlerDeps): WksIntake | undefined {
  const address = deps.config.web.wks_submission_address;
  if (address === undefined) return undefined;
  const handler = new WksHandler(deps, address);
  return { address, logger: deps.logger, handle: (message) => handler.handle(message) };
}

class WksHandler {
  private submissionKey: PrivateKey | undefined;

  constructor(
    private readonly deps: WksHandlerDeps,
    private readonly address: string,
  ) {}

  async handle(mail: Buffer): Promise<void> {
    const signingKey = await this.key();
    let message: WksMessage;
    try {
      message = await readWksMail(mail, signingKey);
    } catch (error) {
      if (error instanceof WksMessageError) return this.drop('unreadable', error.message);
      throw error;
    }
    try {
      if (message.kind === 'submission') await this.submission(message.key, signingKey);
      else await this.confirmation(message.address, message.nonce);
    } catch (error) {
      if (!isTheMails(error)) throw error;
      return this.drop(message.kind, error.code);
    }
  }

  /** One pending key and confirmation request per served address of the key (as gpg-wks-server does). */
  private async submission(armored: string, signingKey: PrivateKey): Promise<void> {
    const key = await readKey({ armoredKey: armored }).catch(() => undefined);
    if (!key) return this.drop('submission', 'not-a-key');
    const addresses = [...new Set(key.users.flatMap((user) => (user.userID?.email ? [user.userID.email] : [])))]
      .filter((email) => this.isServed(email))
      .slice(0, MAX_ADDRESSES_PER_SUBMISSION);
    if (addresses.length === 0) return this.drop('submission', 'domain-not-served');
    for (const email of addresses) {
      try {
        await this.requestConfirmation(armored, email, signingKey);
      } catch (error) {
        if (!isTheMails(error)) throw error;
        this.drop('submission', error.code);
      }
    }
  }

  private async requestConfirmation(armored: string, email: string, signingKey: PrivateKey): Promise<void> {
    // Postfix retrying this mail (another address's request failed for now) must not ask this address twice.
    if (await this.deps.service.recentWksRequest(email, armored)) return;
    const lang = this.deps.config.web.default_language;
    const t = this.deps.catalogs.translator(lang);
    const targetKey = await readKey({ armoredKey: armored });
    const pending = await this.deps.service.submitPending({ key: armored, email, lang, channel: 'wks' }, async (submission) => {
      const entity = await confirmationRequestEntity({
        request: { sender: this.address, address: submission.email, fingerprint: submission.fingerprint, nonce: submission.token },
        explanation: [
          t('This message was sent to confirm your request to publish your OpenPGP key. If you did not ask for it, ignore this message.'),
          t('Your mail program (or gpg-wks-client --receive) answers it for you; the answer publishes the key {fingerprint} for {email}.', {
            fingerprint: submission.fingerprint,
            email: submission.email,
          }),
        ].join('\n\n'),
        targetKey,
        signingKey,
      });
      await this.deps.mailer.send({
        to: submission.email,
        key: null,
        subject: t('Confirm your key publication'),
        lang,
        body: { entity },
        headers: { 'Wks-Draft-Version': WKS_DRAFT_VERSION, 'Wks-Phase': 'confirm' },
      });
    });
    this.deps.logger.info({ wks: 'confirmation-request', fingerprint: pending.fingerprint }, 'WKS submission: confirmation request sent');
  }

  private async confirmation(address: string, nonce: string): Promise<void> {
    const request = await this.deps.service.describeRequest(nonce);
    if (request.action !== 'publish') return this.drop('confirmation-response', 'not-a-publish-request');
    if (comparable(request.email) !== comparable(address)) return this.drop('confirmation-response', 'address-mismatch');
    const done = await this.deps.service.confirm(nonce);
    this.deps.logger.info({ wks: 'published', fingerprint: done.fingerprint }, 'WKS confirmation: key published');
  }

  private isServed(email: string): boolean {
    const domain = comparable(email).slice(comparable(email).lastIndexOf('@') + 1);
    return this.deps.config.keys.domains.some((served) => comparable(`x@${served}`) === `x@${domain}`);
  }

  private drop(kind: string, reason: string): void {
    this.deps.logger.info({ wks: kind, reason }, 'WKS mail dropped');
  }

  /** The submission key, read once; missing, it is a temporary failure: the mail waits for `lacre wks init`. */
  private async key(): Promise<PrivateKey> {
    if (this.submissionKey) return this.submissionKey;
    const path = this.deps.config.web.wks_key_path;
    try {
      this.submissionKey = await loadSubmissionKey(path);
    } catch (error) {
      throw new LacreError(`WKS submission key ${path} not readable (lacre wks init creates it): ${errorMessage(error)}`, { cause: error });
    }
    return this.submissionKey;
  }
}

/**
 * A refusal this mail earned (a weak key, a used or unknown nonce...): dropped with its reason, since a retry would
 * be refused alike. Anything else (the database or the mailer failing, a statement timeout, a fault of Lacre's)
 * fails the copy for now, so Postfix keeps the mail and retries it, and bounces it to its sender when it expires:
 * never dropped unread.
 */
function isTheMails(error: unknown): error is WebError {
  return error instanceof WebError && error.status < 500;
}
