import { z } from 'zod';
import { parseByteSize } from './units.js';
import { HOST_PORT_HINT, HOST_PORT_PATTERN } from '../util/host-port.js';
import { parseClientEntry } from '../util/allowed-clients.js';

/** A size given as a number of bytes or a string such as "200MB", "64KiB". */
const byteSize = z.union([z.number().int().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  const bytes = parseByteSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size such as 200MB, 64KiB or a number of bytes, got "${value}"` });
    return z.NEVER;
  }
  return bytes;
});

/** "host:port" or "[v6]:port". */
const listenAddress = z.string().regex(HOST_PORT_PATTERN, HOST_PORT_HINT);

/**
 * A PostgreSQL server as pg reaches it: a postgres:// or postgresql:// URL (a Unix socket goes in ?host=). pg takes
 * anything else for a path relative to a made-up host, and it does not read libpq's key=value strings at all.
 */
const postgresUrl = z
  .string()
  // "user@/db" (no host: the default socket) is pg's too, though the WHATWG parser refuses it.
  .refine((value) => /^postgres(ql)?:\/\//i.test(value) && URL.canParse(value.replace('@/', '@localhost/')), {
    message: 'expected a postgresql:// URL, e.g. postgresql://lacre@127.0.0.1:5432/lacre (through a Unix socket: postgresql:///lacre?host=/var/run/postgresql)',
  })
  // pg passes the decoded user, database and options into the startup message, where a NUL would cut a parameter
  // short and start another (docs/security.md, "Dependencies").
  .refine((value) => !/\0|%00/i.test(value), { message: 'a NUL byte (%00) is not allowed in a database URL' });

const database = z.strictObject({
  /** PostgreSQL connection URL; unset = embedded PGlite in data_dir. */
  url: postgresUrl.optional(),
  data_dir: z.string().min(1).default('./data'),
  pool_size: z.number().int().min(1).max(100).default(10),
  /** PostgreSQL only: a query (waiting for a pool connection included) that takes longer fails as "unavailable" (4xx). */
  query_timeout_seconds: z.number().positive().default(10),
});

/** An address or a CIDR: "127.0.0.1", "10.0.0.0/8", "::1", "fd00::/64". */
const clientAddress = z.string().refine((entry) => parseClientEntry(entry) !== undefined, {
  message: 'expected an IP address or a CIDR such as 10.0.0.0/8',
});

const smtp = z.strictObject({
  listen: listenAddress.default('127.0.0.1:10025'),
  /**
   * The peers the listener talks to (Postfix); any other gets 554 5.7.1 at connect. Whoever reaches the listener
   * reaches the reinjection port through it, which Postfix trusts, so widening listen alone opens nothing.
   */
  allowed_clients: z.array(clientAddress).default(['127.0.0.1', '::1']),
  lmtp: z.boolean().default(false),
  max_size: byteSize.default(200 * 1024 * 1024),
  max_header_size: byteSize.default(1024 * 1024),
  max_clients: z.number().int().min(1).default(200),
  hostname: z.string().min(1).optional(),
  socket_timeout_seconds: z.number().positive().default(300),
  /** From DATA to the message's final dot; past it the connection is closed with 421 and nothing is delivered. */
  data_timeout_seconds: z.number().positive().default(600),
});

const relay = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(1).max(65535).default(10026),
  max_connections: z.number().int().min(1).max(1000).default(20),
  timeout_seconds: z.number().positive().default(120),
  /**
   * The delivery ledger (docs/exactly-once.md): hours each accepted copy is remembered, so that a message Postfix
   * retries skips the copies already delivered. Postfix's maximal_queue_lifetime (5 days) by default; 0 = off.
   */
  delivered_retention_hours: z.number().nonnegative().default(120),
});

const encryption = z.strictObject({
  /** One copy per keyed recipient (false, keeps Bcc private) or one copy per style. */
  group_recipients: z.boolean().default(false),
  /** What a recipient whose keys are all expired/revoked/unusable gets. */
  on_unusable_key: z.enum(['plain', 'tempfail', 'reject']).default('plain'),
  /** Where copies spill, sealed under a key held in memory, when a message outgrows spool_memory. */
  spool_dir: z.string().min(1).optional(),
  spool_memory: byteSize.default(1024 * 1024),
  /** Worker threads encrypting messages held in memory; unset = one per CPU but one, 0 = on the event loop. */
  workers: z.number().int().min(0).max(64).optional(),
});

const keys = z.strictObject({
  local_part_case_sensitive: z.boolean().default(false),
  /** As Postfix's recipient_delimiter: each character separates a local part from its extension; "" = none. */
  recipient_delimiter: z.string().max(32).regex(/^[^@\s"]*$/, 'expected delimiter characters such as "+" or "+-", without @, quotes or white space').default('+'),
  cache_ttl_seconds: z.number().nonnegative().default(300),
  /** Largest key input accepted by an import, armored or binary (checked before it is parsed). */
  max_key_bytes: byteSize.default(1024 * 1024),
  /** The domains whose users may publish keys through the key service and WKS (web.listen); others are refused. */
  domains: z.array(z.string().min(1)).default([]),
});

const serviceToken = z.string().regex(/^[^:\s]+:\S+$/, 'expected "service:token"');

/** Soledad's Incoming Box namespace: where deliveries land and where its client looks. */
export const INCOMING_NAMESPACE = 'MX';

/** A box namespace as named in configuration or on a command line: `mx`, Lacre's old spelling, is Soledad's `MX`. */
export function incomingNamespace(namespace: string): string {
  return namespace === 'mx' ? INCOMING_NAMESPACE : namespace;
}

const incomingBox = z.strictObject({
  // Delivery side (Lacre as the Trusted Application).
  /** Base URL of the box that receives copies, e.g. http://127.0.0.1:9025; unset = no box delivery. */
  url: z.string().url().optional(),
  /** The "service:token" pair sent as `Authorization: Token base64(service:token)`. */
  token: serviceToken.optional(),
  /** Namespaces are case-sensitive; `mx` (Lacre's earlier spelling) means Soledad's `MX`. */
  namespace: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).default(INCOMING_NAMESPACE).transform(incomingNamespace),
  /** Domains whose every recipient is delivered to a box (others only when mapped per address). */
  domains: z.array(z.string().min(1)).default([]),
  /** Box recipients without a usable key: reinject in plaintext, or refuse at RCPT (4xx / 5xx). */
  no_key: z.enum(['plain', 'tempfail', 'reject']).default('plain'),
  /** What a box copy is: the whole message as one OpenPGP message, or a PGP/MIME message. */
  scheme: z.enum(['openpgp', 'openpgp-mime']).default('openpgp'),
  timeout_seconds: z.number().positive().default(60),
  max_connections: z.number().int().min(1).max(1000).default(10),
  // Box side (Lacre as the Incoming Box server).
  serve: z.boolean().default(false),
  listen: listenAddress.default('127.0.0.1:9025'),
  blobs_path: z.string().min(1).default('./data/blobs'),
  /** "service:token" pairs allowed to deliver to /incoming. */
  trusted_tokens: z.array(serviceToken).default([]),
  /** Per-user quota (0 = none) and how far past it a write may go. */
  quota: byteSize.default(1024 ** 3),
  quota_tolerance: byteSize.default(0),
  processing_threshold_seconds: z.number().positive().default(600),
  /** PROCESSED and permanently FAILED blobs older than this are purged. */
  retention_hours: z.number().nonnegative().default(24),
  purge_interval_seconds: z.number().positive().default(3600),
});

const http = z.strictObject({
  /** Metrics, health and admin endpoints; unauthenticated, so loopback by default. */
  enabled: z.boolean().default(true),
  listen: listenAddress.default('127.0.0.1:10080'),
});

/** A language tag as gettext catalogs are named: "es", "pt-BR". */
const languageTag = z.string().regex(/^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/, 'expected a language tag such as "en" or "pt-BR"');

const web = z.strictObject({
  /** The public key service for users (API, page, WKD); unset = off. Behind a TLS reverse proxy in production. */
  listen: listenAddress.optional(),
  /** The base of every link Lacre mails and serves (the proxy's https:// URL); required with listen. */
  public_url: z.string().url().optional(),
  /** From: of the mails Lacre sends (confirmations, notices, WKS); required with listen. */
  sender: z.string().min(3).optional(),
  /** How long a confirmation link (or WKS nonce) stays valid. */
  token_ttl_hours: z.number().positive().default(48),
  /** Addresses of the reverse proxies whose X-Forwarded-For is believed; [] = the socket's peer is the client. */
  trust_proxy: z.array(z.string().min(1)).default([]),
  /** State-changing requests one client address may make per hour (429 beyond). */
  requests_per_ip_per_hour: z.number().int().min(1).default(30),
  /** Confirmation mails one address may receive per hour, whoever asks (429 beyond). */
  mails_per_address_per_hour: z.number().int().min(1).default(3),
  /** A request's headers and body must arrive within this (408 and the connection closed beyond): a stalled upload frees its connection. */
  request_timeout_seconds: z.number().int().min(1).max(300).default(30),
  /** Language of the page and mails when neither ?lang= nor Accept-Language names one Lacre has. */
  default_language: languageTag.default('en'),
  /** Mail users whose confirmed key expires within this many days (once per key, once more when expired); 0 = never. */
  expiry_notice_days: z.number().int().min(0).default(14),
  /** Serve confirmed keys as a Web Key Directory (/.well-known/openpgpkey/...). */
  wkd: z.boolean().default(false),
  /** The Web Key Service's submission address (mail to it is answered by Lacre); unset = no WKS. */
  wks_submission_address: z.string().min(3).optional(),
  /** The WKS submission key pair, written by `lacre wks init` (0600): the one secret key Lacre holds. */
  wks_key_path: z.string().min(1).default('./data/wks-submission-key.asc'),
});

const admin = z.strictObject({
  /**
   * Unix socket (0600) on which `lacre serve` takes key administration; `lacre keys` uses it when it answers.
   * "" = none; "off" too, which the environment can say (LACRE_ADMIN_SOCKET=off: an empty variable counts as unset).
   */
  socket: z
    .string()
    .default('./data/admin.sock')
    .transform((socket) => (socket === 'off' ? '' : socket)),
});

const log = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Append log lines to this file instead of stdout (`lacre pipe` logs nowhere without it). */
  file: z.string().min(1).optional(),
});

export const configSchema = z.strictObject({
  database: database.prefault({}),
  smtp: smtp.prefault({}),
  relay: relay.prefault({}),
  encryption: encryption.prefault({}),
  keys: keys.prefault({}),
  incoming_box: incomingBox.prefault({}),
  http: http.prefault({}),
  web: web.prefault({}),
  admin: admin.prefault({}),
  log: log.prefault({}),
}).superRefine((config, ctx) => {
  const { web } = config;
  const need = (path: [string, string], message: string) => ctx.addIssue({ code: 'custom', path, message });
  // The key service and WKS both mail users and publish keys of keys.domains.
  const feature = web.listen !== undefined ? 'web.listen' : web.wks_submission_address !== undefined ? 'web.wks_submission_address' : undefined;
  if (feature === undefined) return;
  if (web.listen !== undefined && web.public_url === undefined) need(['web', 'public_url'], 'web.public_url is required when web.listen is set');
  if (web.sender === undefined) need(['web', 'sender'], `web.sender is required when ${feature} is set`);
  if (config.keys.domains.length === 0) need(['keys', 'domains'], `keys.domains must name the domains whose users may publish keys when ${feature} is set`);
});

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export const configSections = Object.keys(configSchema.shape) as (keyof Config)[];

/** "section.key" of every size setting (they take "200MB" as well as bytes): `lacre check` prints these in words. */
export const sizeSettings: ReadonlySet<string> = new Set(
  Object.entries(configSchema.shape).flatMap(([section, sectionSchema]) =>
    Object.entries(sectionSchema.def.innerType.shape)
      .filter(([, field]) => unwrapDefault(field as z.ZodType) === byteSize)
      .map(([key]) => `${section}.${key}`),
  ),
);

function unwrapDefault(field: z.ZodType): z.ZodType {
  const def = field.def as { type: string; innerType?: z.ZodType };
  return (def.type === 'default' || def.type === 'optional') && def.innerType ? unwrapDefault(def.innerType) : field;
}
