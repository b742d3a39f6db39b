import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { z } from 'zod';
import { DEFAULT_CONFIG_FILE, loadConfig, loadConfigWith, maskSecrets, maskUrlPassword } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { findPackageRoot } from '../../src/util/package-root.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log/logger.js';

const workDir = mkdtempSync(join(tmpdir(), 'lacre-config-'));
after(() => rmSync(workDir, { recursive: true, force: true }));
let fileCount = 0;

function configFile(toml: string): string {
  const path = join(workDir, `lacre-${++fileCount}.toml`);
  writeFileSync(path, toml);
  return path;
}

/** The ConfigError's lines, failing the test if loading does not throw one. */
function problems(options: Parameters<typeof loadConfig>[0]): string[] {
  try {
    loadConfig(options);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error.message.split('\n');
  }
  assert.fail('loadConfig accepted an invalid configuration');
}

const exampleFile = join(findPackageRoot(), 'deploy', 'lacre.example.toml');

describe('loadConfig', () => {
  test('no file and no environment gives the documented defaults', () => {
    const config = loadConfig({ env: {} });
    assert.equal(config.database.url, undefined);
    assert.equal(config.database.data_dir, './data');
    assert.equal(config.smtp.listen, '127.0.0.1:10025');
    assert.equal(config.smtp.lmtp, false);
    assert.equal(config.smtp.max_size, 200 * 1024 * 1024);
    assert.equal(config.relay.host, '127.0.0.1');
    assert.equal(config.relay.port, 10026);
    assert.equal(config.relay.delivered_retention_hours, 120, 'the delivery ledger is on, as long as Postfix retries a message');
    assert.equal(config.log.level, 'info');
    assert.deepEqual(config, configSchema.parse({}));
  });

  test('file values, then environment overrides with types coerced from the schema', () => {
    const file = configFile(`
[database]
url = "postgres://lacre:s3cret@db.example.org/lacre"

[smtp]
listen = "127.0.0.1:2525"
max_size = "10MB"
lmtp = false

[relay]
port = 2526
`);
    const config = loadConfig({
      file,
      env: {
        LACRE_RELAY_PORT: '3000',
        LACRE_SMTP_LMTP: 'yes',
        LACRE_SMTP_MAX_SIZE: '64KiB',
        LACRE_KEYS_CACHE_TTL_SECONDS: '0.5',
        LACRE_ENCRYPTION_GROUP_RECIPIENTS: 'TRUE',
        LACRE_LOG_LEVEL: 'debug',
        LACRE_SMTP_HOSTNAME: '',
        PATH: '/usr/bin',
      },
    });
    assert.equal(config.database.url, 'postgres://lacre:s3cret@db.example.org/lacre');
    assert.equal(config.smtp.listen, '127.0.0.1:2525');
    assert.equal(config.relay.port, 3000);
    assert.equal(config.smtp.lmtp, true);
    assert.equal(config.smtp.max_size, 65536);
    assert.equal(config.keys.cache_ttl_seconds, 0.5);
    assert.equal(config.encryption.group_recipients, true);
    assert.equal(config.log.level, 'debug');
    assert.equal(config.smtp.hostname, undefined, 'an empty variable counts as unset');
  });

  test('booleans from the environment: true/false/1/0/yes/no', () => {
    for (const [text, expected] of [['true', true], ['1', true], ['yes', true], ['false', false], ['0', false], ['No', false]] as const) {
      assert.equal(loadConfig({ env: { LACRE_SMTP_LMTP: text } }).smtp.lmtp, expected, text);
    }
  });

  test('section names containing underscores are matched longest first', () => {
    const schema = z.strictObject({
      incoming: z.strictObject({ box_url: z.string().optional() }).prefault({}),
      incoming_box: z.strictObject({ url: z.string().optional(), quota: z.number().int().min(0).default(0) }).prefault({}),
    });
    const config = loadConfigWith(schema, { env: { LACRE_INCOMING_BOX_URL: 'http://box', LACRE_INCOMING_BOX_QUOTA: '7' } });
    assert.deepEqual(config, { incoming: {}, incoming_box: { url: 'http://box', quota: 7 } });
    assert.deepEqual(loadConfigWith(schema, { env: { LACRE_INCOMING_BOX_URL: 'x' } }).incoming_box.url, 'x');
    const onlyShort = z.strictObject({ incoming: z.strictObject({ box_url: z.string().optional() }).prefault({}), incoming_box: z.strictObject({}).prefault({}) });
    assert.equal(loadConfigWith(onlyShort, { env: { LACRE_INCOMING_BOX_URL: 'y' } }).incoming.box_url, 'y', 'falls back to a shorter section that has the key');
  });

  test('LACRE_INBOX_TOKEN (the fetch token) is not taken for a setting, so exporting it breaks no command', () => {
    assert.equal(loadConfig({ env: { LACRE_INBOX_TOKEN: 'secret' } }).relay.port, 10026);
  });

  test('the file comes from LACRE_CONFIG when no file option is given', () => {
    const file = configFile('[relay]\nport = 4444\n');
    assert.equal(loadConfig({ env: { LACRE_CONFIG: file } }).relay.port, 4444);
    assert.equal(loadConfig({ file: configFile('[relay]\nport = 5555\n'), env: { LACRE_CONFIG: file } }).relay.port, 5555);
  });

  test('with neither a file option nor LACRE_CONFIG, the default file is read when it exists (the CLI passes /etc/lacre/lacre.toml)', () => {
    const defaultFile = configFile('[relay]\nport = 6666\n');
    assert.equal(DEFAULT_CONFIG_FILE, '/etc/lacre/lacre.toml');
    assert.equal(loadConfig({ env: {}, defaultFile }).relay.port, 6666);
    assert.equal(loadConfig({ env: { LACRE_CONFIG: '' }, defaultFile }).relay.port, 6666, 'an empty LACRE_CONFIG counts as unset');
    assert.equal(loadConfig({ env: {}, defaultFile: join(workDir, 'absent.toml') }).relay.port, 10026, 'absent: defaults');
    assert.equal(loadConfig({ env: { LACRE_CONFIG: configFile('[relay]\nport = 4444\n') }, defaultFile }).relay.port, 4444);
    assert.equal(loadConfig({ file: configFile('[relay]\nport = 5555\n'), env: {}, defaultFile }).relay.port, 5555);
  });

  test('an unknown key in the file is named with the file and a suggestion', () => {
    const file = configFile('[smtp]\nmax_sise = "10MB"\n');
    assert.deepEqual(problems({ file, env: {} }), [`smtp.max_sise: unknown key (in ${file}; did you mean smtp.max_size?)`]);
  });

  test('an unknown section and a section that is not a table are named', () => {
    const file = configFile('smtp = 5\n[smpt]\nlisten = "x"\n');
    assert.deepEqual(problems({ file, env: {} }), [
      `smtp (from ${file}): expected a table [smtp], got 5`,
      `smpt: unknown section (in ${file}; did you mean smtp?)`,
    ]);
  });

  test('an unknown LACRE_ variable is named, with the variable it was probably meant to be', () => {
    assert.deepEqual(problems({ env: { LACRE_SMTP_MAX_SISE: '1' } }), [
      'LACRE_SMTP_MAX_SISE: unknown setting (smtp.max_sise is not a key; did you mean LACRE_SMTP_MAX_SIZE?)',
    ]);
    const [unknownSection] = problems({ env: { LACRE_NOPE_X: '1' } });
    assert.match(unknownSection!, /^LACRE_NOPE_X: unknown setting \(it starts with no section name; sections are database, smtp, /);
    assert.match(problems({ env: { LACRE_SMTP: '1' } })[0]!, /^LACRE_SMTP: unknown setting/);
  });

  test('bad values name the key, where it came from and what was expected', () => {
    const file = configFile('[relay]\nport = 70000\n[log]\nlevel = "loud"\n[smtp]\nlisten = "localhost"\nmax_size = "big"\nlmtp = "yes"\n');
    assert.deepEqual(problems({ file, env: {} }), [
      `smtp.listen (from ${file}): expected host:port, e.g. 127.0.0.1:10025, got "localhost"`,
      `smtp.lmtp (from ${file}): expected true or false, got "yes"`,
      `smtp.max_size (from ${file}): expected a size such as 200MB, 64KiB or a number of bytes, got "big"`,
      `relay.port (from ${file}): expected a number from 1 to 65535, got 70000`,
      `log.level (from ${file}): expected one of fatal, error, warn, info, debug, trace, silent, got "loud"`,
    ]);
  });

  test('bad environment values are named with their variable', () => {
    assert.deepEqual(problems({ env: { LACRE_RELAY_PORT: 'abc' } }), [
      'relay.port (from LACRE_RELAY_PORT): expected a number from 1 to 65535, got "abc"',
    ]);
    assert.deepEqual(problems({ env: { LACRE_RELAY_PORT: '1.5' } }), [
      'relay.port (from LACRE_RELAY_PORT): expected a whole number from 1 to 65535, got 1.5',
    ]);
    assert.deepEqual(problems({ env: { LACRE_SMTP_LMTP: 'maybe' } }), [
      'smtp.lmtp (from LACRE_SMTP_LMTP): expected true or false (or yes/no, 1/0), got "maybe"',
    ]);
    assert.deepEqual(problems({ env: { LACRE_RELAY_TIMEOUT_SECONDS: '0' } }), [
      'relay.timeout_seconds (from LACRE_RELAY_TIMEOUT_SECONDS): expected a number greater than 0, got 0',
    ]);
    // fastify and Node take whole milliseconds: 4.02 s would have passed lacre check and stopped lacre serve.
    for (const seconds of ['4.02', '0', '301']) {
      assert.equal(problems({ env: { LACRE_WEB_REQUEST_TIMEOUT_SECONDS: seconds } })[0]!.split(':')[0], 'web.request_timeout_seconds (from LACRE_WEB_REQUEST_TIMEOUT_SECONDS)', seconds);
    }
  });

  test('all problems are reported at once, one per line', () => {
    const file = configFile('[smtp]\nmax_sise = 1\n[relay]\nport = "x"\n');
    const lines = problems({ file, env: { LACRE_LOG_LEVEL: 'loud', LACRE_BOGUS_KEY: '1' } });
    assert.equal(lines.length, 4, lines.join('\n'));
    assert.ok(lines.some((line) => line.startsWith('smtp.max_sise: unknown key')));
    assert.ok(lines.some((line) => line.startsWith(`relay.port (from ${file}):`)));
    assert.ok(lines.some((line) => line.startsWith('log.level (from LACRE_LOG_LEVEL):')));
    assert.ok(lines.some((line) => line.startsWith('LACRE_BOGUS_KEY: unknown setting')));
  });

  test('a missing file and invalid TOML are reported with the path', () => {
    const missing = join(workDir, 'missing.toml');
    assert.match(problems({ file: missing, env: {} })[0]!, new RegExp(`^cannot read config file ${missing}: .*ENOENT`));
    const broken = configFile('[smtp\nlisten = 1\n');
    assert.match(problems({ file: broken, env: {} })[0]!, new RegExp(`^${broken}:1:\\d+: invalid TOML: `));
  });

  test('invalid TOML keeps smol-toml\u2019s line, column and complaint, without the line itself', () => {
    const broken = configFile('[database]\nurl = "postgres://lacre:hunter2@db/lacre"\n[smtp]\nmax_size = 200 MB\n');
    assert.deepEqual(problems({ file: broken, env: {} }), [
      `${broken}:4:16: invalid TOML: each key-value declaration must be followed by an end-of-line`,
    ]);
  });

  test('database.url must be a postgres:// or postgresql:// URL; the message names the key and hides the password', () => {
    const file = configFile('[database]\nurl = "htp//nowhere"\n');
    assert.deepEqual(problems({ file, env: {} }), [
      `database.url (from ${file}): expected a postgresql:// URL, e.g. postgresql://lacre@127.0.0.1:5432/lacre (through a Unix socket: postgresql:///lacre?host=/var/run/postgresql), got "htp//nowhere"`,
    ]);
    for (const refused of ['host=db dbname=lacre', 'mysql://db/lacre', '/var/run/postgresql lacre', 'postgres://[db/lacre']) {
      assert.match(problems({ env: { LACRE_DATABASE_URL: refused } })[0]!, /^database\.url \(from LACRE_DATABASE_URL\): expected a postgresql:\/\/ URL/);
    }
    for (const nul of ['postgres://lacre@db/lacre%00options=-c', 'postgres://lacre\u0000x@db/lacre']) {
      assert.match(problems({ env: { LACRE_DATABASE_URL: nul } })[0]!, /^database\.url \(from LACRE_DATABASE_URL\): a NUL byte \(%00\) is not allowed in a database URL/);
    }
    const withPassword = problems({ env: { LACRE_DATABASE_URL: 'postgres://lacre:hunter2@[db/lacre' } })[0]!;
    assert.ok(!withPassword.includes('hunter2'), withPassword);
    for (const accepted of ['postgres://lacre@127.0.0.1:5432/lacre', 'POSTGRESQL://db/lacre?sslmode=require', 'postgresql:///lacre?host=/var/run/postgresql', 'postgres://lacre@/lacre']) {
      assert.equal(loadConfig({ env: { LACRE_DATABASE_URL: accepted } }).database.url, accepted);
    }
  });

  test("incoming_box.namespace is Soledad's MX by default; mx, Lacre's old spelling, means MX; others are kept as given", () => {
    assert.equal(loadConfig({ env: {} }).incoming_box.namespace, 'MX');
    assert.equal(loadConfig({ file: configFile('[incoming_box]\nnamespace = "mx"\n'), env: {} }).incoming_box.namespace, 'MX');
    assert.equal(loadConfig({ env: { LACRE_INCOMING_BOX_NAMESPACE: 'mx' } }).incoming_box.namespace, 'MX');
    assert.equal(loadConfig({ env: { LACRE_INCOMING_BOX_NAMESPACE: 'Mx' } }).incoming_box.namespace, 'Mx');
    assert.equal(loadConfig({ env: { LACRE_INCOMING_BOX_NAMESPACE: 'mail' } }).incoming_box.namespace, 'mail');
  });

  test('deploy/lacre.example.toml loads, equals the defaults and mentions every key', () => {
    assert.deepEqual(loadConfig({ file: exampleFile, env: {} }), loadConfig({ env: {} }));
    const text = readFileSync(exampleFile, 'utf8');
    for (const [section, sectionSchema] of Object.entries(configSchema.shape)) {
      assert.ok(text.includes(`[${section}]`), `section [${section}] is documented`);
      const shape = (sectionSchema.def.innerType as unknown as { shape: Record<string, unknown> }).shape;
      for (const key of Object.keys(shape)) {
        assert.match(text, new RegExp(`^(# )?${key} = `, 'm'), `${section}.${key} is documented`);
      }
    }
  });
});

describe('the key service settings', () => {
  test('are off by default: no web listener, the admin socket in the data folder', () => {
    const config = loadConfig({ env: {} });
    assert.equal(config.web.listen, undefined);
    assert.equal(config.web.token_ttl_hours, 48);
    assert.equal(config.web.expiry_notice_days, 14);
    assert.equal(config.admin.socket, './data/admin.sock');
  });

  test('web.listen without public_url, sender or keys.domains names each missing setting and why', () => {
    assert.throws(
      () => loadConfig({ env: { LACRE_WEB_LISTEN: '127.0.0.1:8443' } }),
      (error: Error) =>
        error.message.includes('web.public_url is required when web.listen is set') &&
        error.message.includes('web.sender is required when web.listen is set') &&
        error.message.includes('keys.domains must name the domains'),
    );
    const config = loadConfig({
      env: { LACRE_WEB_LISTEN: '127.0.0.1:8443', LACRE_WEB_PUBLIC_URL: 'https://keys.example.org', LACRE_WEB_SENDER: 'keys@example.org', LACRE_KEYS_DOMAINS: 'example.org' },
    });
    assert.deepEqual(config.keys.domains, ['example.org']);
  });
});

describe('maskSecrets', () => {
  test('masks the password in database.url and leaves everything else alone', () => {
    const config = loadConfig({ env: { LACRE_DATABASE_URL: 'postgres://lacre:s3cr%40t@db.example.org:5432/lacre?sslmode=require' } });
    const masked = maskSecrets(config);
    assert.equal(masked.database.url, 'postgres://lacre:*****@db.example.org:5432/lacre?sslmode=require');
    assert.equal(config.database.url, 'postgres://lacre:s3cr%40t@db.example.org:5432/lacre?sslmode=require', 'the original is not changed');
    assert.deepEqual({ ...masked, database: undefined }, { ...config, database: undefined });
  });

  test('masks passwords in query parameters and in unparsable URLs; URLs without one are unchanged', () => {
    assert.equal(maskUrlPassword('postgres://db/lacre?user=x&password=hunter2'), 'postgres://db/lacre?user=x&password=*****');
    assert.equal(maskUrlPassword('postgres://u:p@[bad/x'), 'postgres://u:*****@[bad/x');
    assert.equal(maskUrlPassword('postgres://lacre@127.0.0.1/lacre'), 'postgres://lacre@127.0.0.1/lacre');
  });
});

describe('createLogger', () => {
  test('writes one JSON line per entry with service, ISO time and the level name, honouring the level', () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const logger = createLogger('info', destination);
    logger.debug('hidden');
    logger.info({ queueId: 'ABC123' }, 'accepted');
    logger.child({ session: 's1' }).warn('slow');
    assert.equal(lines.length, 2);
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(first.service, 'lacre');
    assert.equal(first.level, 'info');
    assert.equal(first.msg, 'accepted');
    assert.equal(first.queueId, 'ABC123');
    assert.match(String(first.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(first.pid, undefined);
    const second = JSON.parse(lines[1]!) as Record<string, unknown>;
    assert.deepEqual([second.level, second.session, second.service], ['warn', 's1', 'lacre']);
  });
});
