import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHostPort, parseHostPort } from '../../src/util/host-port.js';

describe('parseHostPort', () => {
  it('splits a name or an IPv4 address from its port', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:10025'), { host: '127.0.0.1', port: 10025 });
    assert.deepEqual(parseHostPort('localhost:0'), { host: 'localhost', port: 0 });
    assert.deepEqual(parseHostPort('mail.example.org:25'), { host: 'mail.example.org', port: 25 });
  });

  it('drops the brackets around an IPv6 address', () => {
    assert.deepEqual(parseHostPort('[::1]:9025'), { host: '::1', port: 9025 });
    assert.deepEqual(parseHostPort('[::ffff:127.0.0.1]:80'), { host: '::ffff:127.0.0.1', port: 80 });
  });

  it('refuses what is not host:port, naming the address', () => {
    for (const text of ['127.0.0.1', ':25', 'localhost:', '::1:25', 'host:port', 'a b:25', '127.0.0.1:123456', '[::1]25', '']) {
      assert.equal(isHostPort(text), false, text);
      assert.throws(() => parseHostPort(text), (error: Error) => error.message.includes(`invalid listen address ${text}:`));
    }
  });

  it('accepts exactly what it parses', () => {
    for (const text of ['127.0.0.1:10025', '[::1]:0', 'localhost:65535']) assert.equal(isHostPort(text), true, text);
  });
});
