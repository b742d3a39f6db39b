/**
 * The fault suite's load: distinct messages of mixed sizes to keyed and keyless recipients (some to several), sent
 * to Postfix's public listener at a steady rate, and a tally of what came out the other end.
 */
import { createHash, randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';

export const DOMAIN = 'example.test';
export const SENDER = 'sender@example.org';
/** Recipients whose keys are imported (their copies must be encrypted); the others have none. */
export const KEYED = ['alice@example.test', 'bob@example.test'] as const;
export const KEYLESS = ['carol@example.test', 'dave@example.test'] as const;
export const MAILBOXES = ['alice', 'bob', 'carol', 'dave'];

const RECIPIENT_MIXES: readonly (readonly string[])[] = [
  ['alice@example.test'],
  ['carol@example.test'],
  ['alice@example.test', 'bob@example.test', 'carol@example.test'],
  ['bob@example.test', 'dave@example.test'],
  ['carol@example.test', 'dave@example.test'],
  ['alice@example.test', 'carol@example.test'],
  ['bob@example.test'],
];

const KIB = 1024;
const MIB = 1024 * KIB;

export interface FaultMessage {
  /** Unique in the whole run; in the X-Fault-Id header (kept outside the encrypted part). */
  readonly id: string;
  readonly to: readonly string[];
  readonly raw: Buffer;
  /** A line of the body only: a keyed copy that contains it carries plaintext. */
  readonly marker: string;
}

/** Most messages 1–48 KiB, one in twenty 256 KiB–1 MiB (streamed: over the 256 KiB held whole), one in a hundred 3 MiB. */
export function messageSize(index: number): number {
  if (index % 100 === 7) return 3 * MIB;
  if (index % 20 === 3) return 256 * KIB + ((index * 7919) % (768 * KIB));
  return KIB + ((index * 104_729) % (47 * KIB));
}

export function makeMessage(scenario: string, index: number): FaultMessage {
  const id = `${scenario}-${index}`;
  const to = RECIPIENT_MIXES[index % RECIPIENT_MIXES.length]!;
  const marker = `FAULT-PLAINTEXT-MARKER-${id}`;
  const head = [
    `From: Fault Suite <${SENDER}>`,
    `To: ${to.join(', ')}`,
    `Subject: fault suite ${id}`,
    'Date: Fri, 04 Dec 2026 12:00:00 +0000',
    `Message-ID: <${id}@faults.example.org>`,
    `X-Fault-Id: ${id}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    marker,
    '',
  ].join('\r\n');
  const fill = Math.max(0, messageSize(index) - head.length);
  // Random base64 lines: incompressible, as attachments are; 76 characters as MIME wants them.
  const text = randomBytes(Math.ceil((fill * 3) / 4)).toString('base64').slice(0, fill);
  const lines = text.match(/.{1,76}/g) ?? [];
  return { id, to, raw: Buffer.from(`${head}${lines.join('\r\n')}\r\n`, 'latin1'), marker };
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Sends the messages to Postfix at about `perSecond`, at most `parallel` at once; rejects if Postfix keeps refusing one. */
export async function sendLoad(
  smtpPort: number,
  messages: Iterable<FaultMessage>,
  options: { perSecond: number; parallel: number; onSending: (message: FaultMessage) => void },
): Promise<number> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true, pool: true, maxConnections: options.parallel });
  const started = Date.now();
  let sent = 0;
  let index = 0;
  const inFlight = new Set<Promise<void>>();
  try {
    for (const message of messages) {
      const due = started + (index * 1000) / options.perSecond;
      index += 1;
      if (due > Date.now()) await sleep(due - Date.now());
      while (inFlight.size >= options.parallel) await Promise.race(inFlight);
      // Expected before it is sent: its copies can reach the sink before Postfix's 250 reaches us.
      options.onSending(message);
      const sending = sendOne(transport, message).then(() => {
        sent += 1;
      });
      const tracked = sending.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
    }
    await Promise.all(inFlight);
  } finally {
    transport.close();
  }
  return sent;
}

async function sendOne(transport: ReturnType<typeof nodemailer.createTransport>, message: FaultMessage): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await transport.sendMail({ envelope: { from: SENDER, to: [...message.to], use8BitMime: true } as { from: string; to: string[] }, raw: message.raw });
      return;
    } catch (error) {
      // Postfix's own listener is not under test: a refused submission is retried, never counted as sent.
      if (attempt >= 5) throw error;
      await sleep(500 * attempt);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
