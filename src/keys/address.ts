/**
 * Address normalisation for key storage and lookup. The domain is always compared lower-cased (RFC 5321 says domains
 * are case-insensitive); the local part is compared lower-cased too unless keys.local_part_case_sensitive is set,
 * because senders and key owners routinely disagree on "Alice@" vs "alice@". IDN domains stay in the form given.
 */
import { LacreError } from '../errors.js';

export class InvalidAddressError extends LacreError {}

export interface AddressParts {
  localPart: string;
  domain: string;
}

export interface AddressCaseOptions {
  localPartCaseSensitive: boolean;
}

const MAX_ADDRESS_LENGTH = 320;
// Letters (any script, for IDN), digits, hyphen, dots; or an address literal such as [192.0.2.1].
const DOMAIN = /^(?:[\p{L}\p{N}](?:[\p{L}\p{N}\p{M}-]*[\p{L}\p{N}\p{M}])?\.)*[\p{L}\p{N}](?:[\p{L}\p{N}\p{M}-]*[\p{L}\p{N}\p{M}])?$|^\[[^\[\]\s]+\]$/u;
const DOT_ATOM_LOCAL = /^[^\s"(),:;<>@[\\\]\p{Cc}]+$/u;
const QUOTED_LOCAL = /^"(?:[^"\\\p{Cc}]|\\[^\p{Cc}])*"$/u;

/** Splits an address (optionally in <angle brackets>) into local part and lower-cased domain; throws InvalidAddressError. */
export function parseAddress(input: string): AddressParts {
  let address = input.trim();
  if (address.startsWith('<') && address.endsWith('>')) address = address.slice(1, -1).trim();
  if (address.length === 0) throw new InvalidAddressError('empty address');
  if (address.length > MAX_ADDRESS_LENGTH) throw new InvalidAddressError(`address longer than ${MAX_ADDRESS_LENGTH} characters`);
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) throw new InvalidAddressError(`"${address}" is not an address (expected local@domain)`);
  const localPart = address.slice(0, at);
  const domain = address.slice(at + 1).replace(/\.$/, '').toLowerCase();
  if (!isValidLocalPart(localPart)) throw new InvalidAddressError(`"${address}" has an invalid local part`);
  if (!DOMAIN.test(domain)) throw new InvalidAddressError(`"${address}" has an invalid domain`);
  return { localPart, domain };
}

/** The address as stored: domain lower-cased, local part as given. */
export function canonicalAddress(input: string): string {
  const { localPart, domain } = parseAddress(input);
  return `${localPart}@${domain}`;
}

/** The address as compared: domain lower-cased, local part lower-cased unless configured case-sensitive. */
export function normaliseAddress(input: string, options: AddressCaseOptions): string {
  const { localPart, domain } = parseAddress(input);
  return `${options.localPartCaseSensitive ? localPart : localPart.toLowerCase()}@${domain}`;
}

function isValidLocalPart(localPart: string): boolean {
  if (QUOTED_LOCAL.test(localPart)) return true;
  if (!DOT_ATOM_LOCAL.test(localPart)) return false;
  return !localPart.startsWith('.') && !localPart.endsWith('.') && !localPart.includes('..');
}
