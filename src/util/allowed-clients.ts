import { BlockList, isIP } from 'node:net';

/**
 * A list of addresses and CIDRs ("10.0.0.0/8", "fd00::/64"), such as smtp.allowed_clients, as a test of a peer's
 * address. IPv4-mapped IPv6 peers ("::ffff:127.0.0.1", as a listener on "::" sees IPv4 clients) match their
 * IPv4 entries.
 */
export function allowedClients(entries: readonly string[]): (address: string | undefined) => boolean {
  const list = new BlockList();
  for (const entry of entries) {
    const parsed = parseClientEntry(entry);
    if (parsed === undefined) throw new Error(`"${entry}" is neither an address nor a CIDR`);
    if (parsed.prefix === undefined) list.addAddress(parsed.address, parsed.family);
    else list.addSubnet(parsed.address, parsed.prefix, parsed.family);
  }
  return (address) => {
    const family = address === undefined ? 0 : isIP(address);
    return family !== 0 && list.check(address!, family === 4 ? 'ipv4' : 'ipv6');
  };
}

interface ClientEntry {
  readonly address: string;
  readonly family: 'ipv4' | 'ipv6';
  readonly prefix?: number;
}

/** "address" or "address/prefix", or undefined when it is neither (the config's check uses this too). */
export function parseClientEntry(entry: string): ClientEntry | undefined {
  const [address = '', prefixText, ...rest] = entry.trim().split('/');
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return undefined;
  const family = version === 4 ? 'ipv4' : 'ipv6';
  if (prefixText === undefined) return { address, family };
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  return prefix <= (version === 4 ? 32 : 128) ? { address, family, prefix } : undefined;
}
