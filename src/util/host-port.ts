/** A listen address as the config spells it: "host:port" or "[v6]:port" (port 0 picks a free one). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** What the config's listen keys accept; brackets are required around an IPv6 host so the port stays unambiguous. */
export const HOST_PORT_PATTERN = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/;

export const HOST_PORT_HINT = 'expected host:port, e.g. 127.0.0.1:10025';

export function isHostPort(text: string): boolean {
  return HOST_PORT_PATTERN.test(text);
}

/** Splits "host:port" or "[v6]:port" into what `listen()` takes; the brackets are dropped. */
export function parseHostPort(text: string): HostPort {
  const match = HOST_PORT_PATTERN.exec(text);
  if (!match) throw new Error(`invalid listen address ${text}: ${HOST_PORT_HINT}`);
  return { host: match[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(match[2]) };
}
