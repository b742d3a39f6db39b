/**
 * The envelope as the client sent it, which smtp-server does not keep whole: it turns every MAIL/RCPT domain into
 * Unicode (punycode.toUnicode) and merges recipients that differ only in case (the later replaces the earlier).
 * Everything here that reaches into smtp-server's private parts is in this file.
 */
import type { SMTPServer, SMTPServerAddress, SMTPServerSession } from 'smtp-server';

/** What Lacre reaches for in smtp-server's SMTPConnection. */
interface ConnectionInternals {
  readonly session: SMTPServerSession;
  _parseAddressCommand?: (name: unknown, command: unknown) => SMTPServerAddress | false;
  send(code: number, text: string): void;
}

const SPELLING = Symbol('lacre.receivedSpelling');
type SpelledAddress = SMTPServerAddress & { [SPELLING]?: string };

/** The server's open connections, by the session each serves (for a reply outside a command: the DATA deadline). */
export interface ConnectionWatch {
  /** Sends a reply on the session's connection now; a 421 closes it. False when the connection is gone. */
  send(session: SMTPServerSession, code: number, text: string): boolean;
}

/**
 * Hooks every connection the server accepts so that each MAIL/RCPT address remembers how it was spelled on the
 * wire. When smtp-server no longer has the part this relies on, `unknown` is called (once) and addresses are what
 * smtp-server made of them.
 */
export function watchConnections(server: SMTPServer, unknown: () => void): ConnectionWatch {
  const connections = (server as unknown as { connections: Set<ConnectionInternals> }).connections;
  const bySession = new WeakMap<SMTPServerSession, ConnectionInternals>();
  const add = connections.add.bind(connections);
  let warned = false;
  connections.add = (connection: ConnectionInternals) => {
    bySession.set(connection.session, connection);
    if (!keepSpelling(connection) && !warned) {
      warned = true;
      unknown();
    }
    return add(connection);
  };
  return {
    send(session, code, text) {
      const connection = bySession.get(session);
      if (!connection || !connections.has(connection)) return false;
      connection.send(code, text);
      return true;
    },
  };
}

function keepSpelling(connection: ConnectionInternals): boolean {
  const parse = connection._parseAddressCommand;
  if (typeof parse !== 'function') return false;
  connection._parseAddressCommand = function (name, command) {
    const parsed = parse.call(this, name, command);
    if (parsed) {
      const spelling = addressArgument(command);
      if (spelling !== undefined && sameAddress(spelling, parsed.address)) (parsed as SpelledAddress)[SPELLING] = spelling;
    }
    return parsed;
  };
  return true;
}

/** The address between the angle brackets of `MAIL FROM:<…>` / `RCPT TO:<…>`, source route dropped, as smtp-server reads it. */
function addressArgument(command: unknown): string | undefined {
  const text = String(command ?? '');
  const colon = text.indexOf(':');
  if (colon < 0) return undefined;
  const argument = text.slice(colon + 1).trim().split(/\s+/)[0] ?? '';
  if (!/^<[^<>]*>$/.test(argument)) return undefined;
  return argument.slice(1, -1).replace(/^@[^\s,:@]+(?:,@[^\s,:@]+)*:/, '');
}

/** smtp-server changes only the domain of an address (its Unicode form, a normalised IPv6 literal). */
function sameAddress(spelling: string, parsed: string): boolean {
  const at = spelling.lastIndexOf('@');
  const parsedAt = parsed.lastIndexOf('@');
  if (at < 0 || parsedAt < 0) return spelling === parsed;
  return spelling.slice(0, at) === parsed.slice(0, parsedAt);
}

/** The address exactly as the client spelled it in its MAIL or RCPT command. */
export function receivedSpelling(address: SMTPServerAddress): string {
  return (address as SpelledAddress)[SPELLING] ?? address.address;
}
