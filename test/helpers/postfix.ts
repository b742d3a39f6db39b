/**
 * A private, throw-away Postfix instance for end-to-end tests.
 *
 * Each instance has its own config, queue, data and Maildir directories under one temp dir and is started with
 * `postfix -c DIR start`; no `multi_instance_*` registration is needed because the instances share nothing with the
 * system instance (which need not be configured or running). Root is required: master(8) runs as root and the
 * daemons drop to mail_owner `postfix`.
 *
 * The `lacre` transport, the reinjection listener and the filter's main.cf settings are read from deploy/postfix
 * (ports substituted), so these tests exercise the configuration that admins install.
 *
 * Layout of the mail flow (FILTER_README "advanced content filter"):
 *   inbound smtpd (smtpPort) -> queue -> `lacre` smtp transport -> [127.0.0.1]:filterPort (the filter under test)
 *   filter -> reinjection smtpd (reinjectPort, content_filter cleared) -> queue -> virtual(8) -> Maildir
 * With `pipeFilter`, the `lacre` transport is the pipe(8) one of deploy/postfix/pipe-master.cf.snippet instead:
 *   inbound smtpd -> queue -> `lacre` pipe transport -> `COMMAND pipe -f sender -- recipients` (stdin: the message)
 * With `lmtp`, it is the lmtp(8) one of deploy/postfix/lmtp-master.cf.snippet, to the same `filterPort`.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.js';

const execFileAsync = promisify(execFile);

const SBIN_CANDIDATES = ['/usr/sbin', '/usr/local/sbin', '/sbin'];

type PostfixProgram = 'postfix' | 'postconf' | 'postqueue' | 'sendmail';

export interface PostfixOptions {
  /** Port of the content filter on 127.0.0.1. Omit to deliver without a content filter. */
  filterPort?: number;
  /** Run the content filter as pipe(8) (deploy/postfix/pipe-master.cf.snippet) instead; excludes `filterPort`. */
  pipeFilter?: PipeFilterOptions;
  /** Speak LMTP to the filter on `filterPort` (deploy/postfix/lmtp-master.cf.snippet) instead of SMTP. */
  lmtp?: boolean;
  /** The virtual mailbox domain. Default `example.test`. */
  domain?: string;
  /** Local parts (or full addresses in `domain`) that have a mailbox. Others are rejected with 550 at RCPT. */
  mailboxes?: string[];
  /** Owner of delivered mail (virtual_uid_maps / virtual_gid_maps). Default `nobody`. */
  deliveryUser?: string;
  /** Extra or overriding main.cf parameters, e.g. `{ minimal_backoff_time: '2s' }`. */
  mainCf?: Record<string, string>;
  /** The reinjection listener's maxproc column (the snippet's is `-`, Postfix's default 100); FILTER_README uses 10. */
  reinjectMaxproc?: number;
}

export interface PipeFilterOptions {
  /**
   * What replaces `/usr/bin/lacre` in the snippet's argv, e.g. `/usr/bin/node /repo/dist/src/cli/main.js`.
   * pipe(8) splits argv on white space: no quoting, so no spaces inside a path.
   */
  command: string;
  /** Replaces the snippet's `--config /etc/lacre/lacre.toml`. */
  configFile: string;
  /** Replaces the snippet's `directory=/var/lib/lacre` (the command's working directory). */
  directory: string;
  /** The unprivileged user the command runs as (pipe(8) refuses root and mail_owner). Default `nobody`. */
  user?: string;
}

export interface QueuedMessage {
  queue_name: string;
  queue_id: string;
  sender: string;
  recipients: { address: string; delay_reason?: string }[];
}

export interface PostfixInstance {
  /** Inbound smtpd on 127.0.0.1: where tests submit mail. */
  readonly smtpPort: number;
  /** Reinjection smtpd on 127.0.0.1: where the filter hands mail back (content_filter cleared). */
  readonly reinjectPort: number;
  readonly domain: string;
  readonly configDir: string;
  readonly rootDir: string;
  /** The Maildir (with cur/ new/ tmp/) of an address. */
  maildirFor(address: string): string;
  /** Paths of the messages currently delivered to an address, oldest first. */
  delivered(address: string): Promise<string[]>;
  /** Waits until at least `count` messages reached the address; returns their paths, oldest first. */
  waitForDelivery(address: string, count: number, timeoutMs: number): Promise<string[]>;
  /** Submits a message as a local program does: sendmail(1) → postdrop → pickup(8), no SMTP on the way in. */
  submitLocally(from: string, to: string[], message: Buffer): Promise<void>;
  /** Messages still in the Postfix queue (`postqueue -j`). */
  queue(): Promise<QueuedMessage[]>;
  /** Asks Postfix to retry deferred mail now (`postfix flush`). */
  flush(): Promise<void>;
  /** The instance's mail log so far. */
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** Absolute path of a Postfix program, or undefined when Postfix is not installed. */
export function postfixProgram(name: PostfixProgram = 'postfix'): string | undefined {
  return SBIN_CANDIDATES.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

/**
 * Why Postfix end-to-end tests must be skipped here (Postfix is not installed), or undefined when they can run.
 * Lacking root is not a reason to skip: startPostfix() then fails loudly.
 */
export function postfixUnavailableReason(): string | undefined {
  if (!postfixProgram()) return 'postfix is not installed (apt-get install postfix; .ci/run does it)';
  return undefined;
}


/** `count` distinct free ports, none of them in `taken`. */
async function freePorts(count: number, taken: number[]): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < count) {
    const port = await freePort();
    if (!ports.includes(port) && !taken.includes(port)) ports.push(port);
  }
  return ports;
}

interface Layout {
  root: string;
  config: string;
  queue: string;
  data: string;
  mail: string;
  maillog: string;
}

interface Ports {
  smtp: number;
  reinject: number;
  filter: number | undefined;
  reinjectMaxproc?: number | undefined;
}

type Filter = { kind: 'none' } | { kind: 'smtp' | 'lmtp'; port: number } | ({ kind: 'pipe'; user: string } & PipeFilterOptions);

export async function startPostfix(options: PostfixOptions = {}): Promise<PostfixInstance> {
  const reason = postfixUnavailableReason();
  if (reason) throw new Error(`cannot start Postfix: ${reason}`);
  if (process.getuid?.() !== 0) {
    throw new Error('cannot start Postfix: a private instance needs root (master(8) runs as root)');
  }
  if (options.pipeFilter && options.filterPort !== undefined) throw new Error('startPostfix: filterPort or pipeFilter, not both');
  if (options.lmtp && options.filterPort === undefined) throw new Error('startPostfix: lmtp needs filterPort');
  const domain = (options.domain ?? 'example.test').toLowerCase();
  const mailboxes = (options.mailboxes ?? ['alice', 'bob', 'carol']).map((box) => localPart(box, domain));
  const owner = systemUser(options.deliveryUser ?? 'nobody');
  const layout = await createLayout(owner);
  const [smtp, reinject] = await freePorts(2, options.filterPort === undefined ? [] : [options.filterPort]);
  const ports: Ports = { smtp: smtp!, reinject: reinject!, filter: options.filterPort, reinjectMaxproc: options.reinjectMaxproc };
  const filter: Filter = options.pipeFilter
    ? { kind: 'pipe', ...options.pipeFilter, user: options.pipeFilter.user ?? 'nobody' }
    : ports.filter === undefined
      ? { kind: 'none' }
      : { kind: options.lmtp ? 'lmtp' : 'smtp', port: ports.filter };

  await writeFile(join(layout.config, 'main.cf'), mainCf(layout, domain, owner, filter, options.mainCf ?? {}));
  await writeFile(join(layout.config, 'master.cf'), masterCf(ports, filter));
  await writeFile(join(layout.config, 'virtual_mailboxes'), mailboxMap(mailboxes, domain));

  const instance = new RunningPostfix(layout, ports, domain);
  try {
    // `postfix start` returns once master(8) is initialised (`master -w`), listeners included.
    await postfixCommand(layout.config, 'start');
  } catch (error) {
    const log = await instance.log().catch(() => '');
    await instance.stop().catch(() => undefined);
    throw new Error(`postfix did not start: ${String(error)}\n--- maillog ---\n${log}`, { cause: error });
  }
  return instance;
}

class RunningPostfix implements PostfixInstance {
  private stopped = false;
  private readonly abortOnExit = (): void => {
    abortSync(this.layout.config);
    rmSync(this.layout.root, { recursive: true, force: true });
  };

  constructor(
    private readonly layout: Layout,
    private readonly ports: Ports,
    readonly domain: string,
  ) {
    // A test that crashes before stop() must not leave a master(8) listening behind it.
    process.once('exit', this.abortOnExit);
  }

  get smtpPort(): number {
    return this.ports.smtp;
  }

  get reinjectPort(): number {
    return this.ports.reinject;
  }

  get configDir(): string {
    return this.layout.config;
  }

  get rootDir(): string {
    return this.layout.root;
  }

  maildirFor(address: string): string {
    return join(this.layout.mail, this.domain, localPart(address, this.domain));
  }

  async delivered(address: string): Promise<string[]> {
    const maildir = this.maildirFor(address);
    const files = [...(await listFiles(join(maildir, 'new'))), ...(await listFiles(join(maildir, 'cur')))];
    const withTimes = await Promise.all(files.map(async (path) => ({ path, mtime: (await stat(path)).mtimeMs })));
    return withTimes.sort((a, b) => a.mtime - b.mtime || a.path.localeCompare(b.path)).map((file) => file.path);
  }

  async waitForDelivery(address: string, count: number, timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const files = await this.delivered(address);
      if (files.length >= count) return files;
      if (Date.now() >= deadline) {
        const queue = await this.queue().catch((error: unknown) => String(error));
        throw new Error(
          `${address}: ${files.length} of ${count} message(s) delivered within ${timeoutMs} ms\n` +
            `--- queue ---\n${JSON.stringify(queue, null, 1)}\n--- maillog ---\n${await this.log()}`,
        );
      }
      await sleep(50);
    }
  }

  async submitLocally(from: string, to: string[], message: Buffer): Promise<void> {
    const child = spawn(requiredProgram('sendmail'), ['-C', this.layout.config, '-f', from, '--', ...to], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve, reject) => child.once('error', reject).once('close', resolve));
    child.stdin.end(message);
    const code = await exited;
    if (code !== 0) throw new Error(`sendmail exited ${code}: ${stderr}`);
  }

  async queue(): Promise<QueuedMessage[]> {
    const { stdout } = await execFileAsync(requiredProgram('postqueue'), ['-c', this.layout.config, '-j']);
    return stdout
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as QueuedMessage);
  }

  async flush(): Promise<void> {
    await postfixCommand(this.layout.config, 'flush');
  }

  async log(): Promise<string> {
    return readFile(this.layout.maillog, 'utf8').catch(() => '');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    process.removeListener('exit', this.abortOnExit);
    await postfixCommand(this.layout.config, 'stop').catch(() => abortSync(this.layout.config));
    await waitForMasterExit(this.layout.config, 10_000);
    await rm(this.layout.root, { recursive: true, force: true });
  }
}

async function createLayout(owner: SystemUser): Promise<Layout> {
  const root = await mkdtemp(join(tmpdir(), 'lacre-postfix-'));
  // Postfix daemons (user postfix) and virtual(8) (the delivery user) must be able to traverse the root.
  await chmod(root, 0o755);
  const layout: Layout = {
    root,
    config: join(root, 'etc'),
    queue: join(root, 'spool'),
    data: join(root, 'data'),
    mail: join(root, 'maildirs'),
    maillog: join(root, 'maillog'),
  };
  for (const dir of [layout.config, layout.queue, layout.data, layout.mail]) await mkdir(dir, { mode: 0o755 });
  const postfixUser = systemUser('postfix');
  await chown(layout.data, postfixUser.uid, postfixUser.gid);
  await chown(layout.mail, owner.uid, owner.gid);
  return layout;
}

function mainCf(
  layout: Layout,
  domain: string,
  owner: SystemUser,
  filter: Filter,
  extra: Record<string, string>,
): string {
  const base: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: layout.queue,
    data_directory: layout.data,
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    syslog_name: 'postfix-lacre-test',
    maillog_file: layout.maillog,
    maillog_file_prefixes: layout.root,
    myhostname: `mx.${domain}`,
    mydomain: domain,
    myorigin: domain,
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    mydestination: '',
    relay_domains: '',
    alias_maps: '',
    alias_database: '',
    // Nothing leaves the instance: mail for other domains bounces locally instead of looking up DNS.
    default_transport: 'error:the test instance delivers only to its own domain',
    relay_transport: 'error:the test instance delivers only to its own domain',
    virtual_mailbox_domains: domain,
    virtual_mailbox_base: layout.mail,
    virtual_mailbox_maps: `texthash:${join(layout.config, 'virtual_mailboxes')}`,
    virtual_uid_maps: `static:${owner.uid}`,
    virtual_gid_maps: `static:${owner.gid}`,
    virtual_minimum_uid: String(Math.min(owner.uid, 100)),
    // Short retry times so that tests of a 4xx from the filter can see the retry.
    queue_run_delay: '1s',
    minimal_backoff_time: '1s',
    maximal_backoff_time: '5s',
  };
  const snippet = replaceOnce(deploySnippet('main.cf.snippet'), filterLine, contentFilterSettings(filter));
  return `${parameters(base)}\n${snippet}\n${parameters(extra)}`;
}

const filterLine = 'content_filter = lacre:[127.0.0.1]:10025\n';

/** The content_filter line of main.cf.snippet, or what pipe-master.cf.snippet says to use instead. */
function contentFilterSettings(filter: Filter): string {
  switch (filter.kind) {
    case 'none':
      return '';
    case 'smtp':
    case 'lmtp':
      if (filter.kind === 'lmtp' && !deploySnippet('lmtp-master.cf.snippet').includes(`#   ${filterLine}`)) {
        throw new Error("lmtp-master.cf.snippet no longer keeps main.cf.snippet's content_filter line");
      }
      return `content_filter = lacre:[127.0.0.1]:${filter.port}\n`;
    case 'pipe': {
      const advised = ['content_filter = lacre:dummy', 'lacre_time_limit = 600s'];
      const snippet = deploySnippet('pipe-master.cf.snippet');
      for (const line of advised) {
        if (!snippet.includes(`#   ${line}\n`)) throw new Error(`pipe-master.cf.snippet no longer advises "${line}"`);
      }
      return advised.map((line) => `${line}\n`).join('');
    }
  }
}

/**
 * master.cf: the production `lacre` transport and reinjection listener from deploy/postfix (on a test port),
 * the inbound listener, and the usual services without chroot.
 */
function masterCf(ports: Ports, filter: Filter): string {
  const reinjectListener = `127.0.0.1:${ports.reinject} inet`;
  let lacre = replaceOnce(deploySnippet('master.cf.snippet'), '127.0.0.1:10026 inet', reinjectListener);
  if (ports.reinjectMaxproc !== undefined) lacre = withMaxproc(lacre, reinjectListener, ports.reinjectMaxproc);
  return [
    filter.kind === 'pipe'
      ? `${withoutService(lacre, 'lacre')}${pipeTransport(filter)}`
      : filter.kind === 'lmtp'
        ? `${withoutService(lacre, 'lacre')}${deploySnippet('lmtp-master.cf.snippet')}`
        : lacre,
    // The public listener keeps Postfix's default size limit, as main.cf.snippet advises.
    `127.0.0.1:${ports.smtp} inet n - n - - smtpd -o message_size_limit=10240000\n`,
    'pickup unix n - n 60 1 pickup\n',
    'cleanup unix n - n - 0 cleanup\n',
    'qmgr unix n - n 300 1 qmgr\n',
    'rewrite unix - - n - - trivial-rewrite\n',
    'bounce unix - - n - 0 bounce\n',
    'defer unix - - n - 0 bounce\n',
    'trace unix - - n - 0 bounce\n',
    'verify unix - - n - 1 verify\n',
    'flush unix n - n 1000? 0 flush\n',
    'proxymap unix - - n - - proxymap\n',
    'proxywrite unix - - n - 1 proxymap\n',
    'smtp unix - - n - - smtp\n',
    'relay unix - - n - - smtp\n',
    'showq unix n - n - - showq\n',
    'error unix - - n - - error\n',
    'retry unix - - n - - error\n',
    'discard unix - - n - - discard\n',
    'local unix - n n - - local\n',
    'virtual unix - n n - - virtual\n',
    'anvil unix - - n - 1 anvil\n',
    'scache unix - - n - 1 scache\n',
    'postlog unix-dgram n - n - 1 postlogd\n',
  ].join('');
}

/** pipe-master.cf.snippet's `lacre` transport, running `command` as `user` instead of /usr/bin/lacre as lacre. */
function pipeTransport(filter: PipeFilterOptions & { user: string }): string {
  let snippet = deploySnippet('pipe-master.cf.snippet');
  snippet = replaceOnce(snippet, ' user=lacre ', ` user=${filter.user} `);
  snippet = replaceOnce(snippet, ' directory=/var/lib/lacre ', ` directory=${filter.directory} `);
  snippet = replaceOnce(snippet, ' --config /etc/lacre/lacre.toml ', ` --config ${filter.configFile} `);
  return replaceOnce(snippet, 'argv=/usr/bin/lacre ', `argv=${filter.command} `);
}

/** master.cf text with the maxproc column of the line for `serviceAndType` (e.g. `127.0.0.1:10026 inet`) set. */
function withMaxproc(masterCfText: string, serviceAndType: string, maxproc: number): string {
  // private, unpriv, chroot and wakeup come before maxproc.
  const line = new RegExp(`^(${escapeRegExp(serviceAndType)}(?:[ \\t]+\\S+){4}[ \\t]+)\\S+`, 'm');
  if (!line.test(masterCfText)) throw new Error(`master.cf snippet: no service "${serviceAndType}"`);
  return masterCfText.replace(line, `$1${maxproc}`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** master.cf text without the entry of one service (its line and the indented lines continuing it). */
function withoutService(masterCfText: string, service: string): string {
  const lines = masterCfText.split(/(?<=\n)/);
  const start = lines.findIndex((line) => line.startsWith(`${service} `) || line.startsWith(`${service}\t`));
  if (start < 0) throw new Error(`master.cf snippet: no service "${service}"`);
  let end = start + 1;
  while (end < lines.length && /^[ \t]+\S/.test(lines[end]!)) end += 1;
  return [...lines.slice(0, start), ...lines.slice(end)].join('');
}

/** A file of deploy/postfix, so that the tests run the configuration that admins install. */
function deploySnippet(name: string): string {
  // Compiled to dist/test/helpers/postfix.js: the repository root is three levels up.
  return readFileSync(new URL(`../../../deploy/postfix/${name}`, import.meta.url), 'utf8');
}

function replaceOnce(text: string, search: string, replacement: string): string {
  const at = text.indexOf(search);
  if (at < 0 || text.indexOf(search, at + 1) >= 0) throw new Error(`deploy snippet: expected exactly one "${search}"`);
  return text.slice(0, at) + replacement + text.slice(at + search.length);
}

function parameters(params: Record<string, string>): string {
  return Object.entries(params)
    .map(([name, value]) => `${name} = ${value}\n`)
    .join('');
}

/** virtual(8) paths ending in `/` are Maildirs. Lookups are case-insensitive, so keys are lower case. */
function mailboxMap(localParts: string[], domain: string): string {
  return localParts.map((local) => `${local}@${domain} ${domain}/${local}/\n`).join('');
}

function localPart(address: string, domain: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  const addressDomain = address.slice(at + 1).toLowerCase();
  if (addressDomain !== domain) throw new Error(`${address} is not in the test domain ${domain}`);
  return address.slice(0, at).toLowerCase();
}

interface SystemUser {
  uid: number;
  gid: number;
}

function systemUser(name: string): SystemUser {
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

function requiredProgram(name: PostfixProgram): string {
  const path = postfixProgram(name);
  if (!path) throw new Error(`${name} not found in ${SBIN_CANDIDATES.join(', ')}`);
  return path;
}

async function postfixCommand(configDir: string, command: string): Promise<void> {
  try {
    await execFileAsync(requiredProgram('postfix'), ['-c', configDir, command], { timeout: 30_000 });
  } catch (error) {
    const failure = error as { stderr?: string; message?: string };
    throw new Error(`postfix -c ${configDir} ${command}: ${failure.stderr || failure.message}`, { cause: error });
  }
}

function abortSync(configDir: string): void {
  try {
    execFileSync(requiredProgram('postfix'), ['-c', configDir, 'abort'], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // Already stopped.
  }
}

/** `postfix status` exits non-zero once master(8) has released its lock, i.e. has exited. */
async function waitForMasterExit(configDir: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const running = await execFileAsync(requiredProgram('postfix'), ['-c', configDir, 'status']).then(
      () => true,
      () => false,
    );
    if (!running) return;
    await sleep(100);
  }
  throw new Error(`postfix master (${configDir}) still running after ${timeoutMs} ms`);
}

async function listFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.map((name) => join(dir, name));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
