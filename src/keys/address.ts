/**
 * Address normalisation for key storage and lookup. The domain is always compared as a lower-cased A-label
 * ("xn--exmple-cua.org" for "exämple.org"): RFC 5321 says domains are case-insensitive, and the same domain reaches
 * Lacre in either form (Postfix hands on what the client sent; smtp-server, left alone, turns it into Unicode; a key's
 * user ID has whichever its owner typed). The local part is compared lower-cased too unless
 * keys.local_part_case_sensitive is set, because senders and key owners routinely disagree on "Alice@" vs "alice@".
 */
import { domainToASCII, domainToUnicode } from 'node:url';
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

/** Splits an address (optionally in <angle brackets>) into local part and lower-cased A-label domain; throws InvalidAddressError. */
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
  return { localPart, domain: asciiDomain(domain) };
}

/** A domain as addresses are compared: a lower-cased A-label, no final dot. */
export function canonicalDomain(domain: string): string {
  return asciiDomain(domain.replace(/\.$/, '').toLowerCase());
}

/**
 * The A-label form of a lower-cased domain (UTS #46 mapping, as browsers and node:url apply it). An ASCII domain is
 * already its own A-label: it is left alone, since the URL host rules would read a numeric one as an IPv4 address.
 * A domain IDNA refuses stays as given, still an address, that only matches itself.
 */
function asciiDomain(domain: string): string {
  if (/^[\x00-\x7f]*$/.test(domain)) return domain;
  return domainToASCII(domain) || domain;
}

/**
 * The same address with its domain in Unicode, when that differs: how addresses with international domains were
 * stored before they were stored as A-labels, so that those rows still match. Takes a normalised address.
 */
export function unicodeDomainVariant(normalised: string): string | undefined {
  const at = normalised.lastIndexOf('@');
  const domain = normalised.slice(at + 1);
  if (!/(^|\.)xn--/.test(domain)) return undefined;
  const unicode = domainToUnicode(domain);
  return unicode && unicode !== domain ? `${normalised.slice(0, at)}@${unicode}` : undefined;
}

/**
 * The address without its extension (keys.recipient_delimiter, as Postfix's recipient_delimiter): "alice+tag@x" →
 * "alice@x". Each character of `delimiters` is a delimiter; the extension starts at the first one found after the
 * local part's first character, as in Postfix's split_addr(). Undefined when there is no extension (or no delimiter).
 */
export function withoutExtension(address: string, delimiters: string): string | undefined {
  if (delimiters === '') return undefined;
  const at = address.lastIndexOf('@');
  if (at <= 0) return undefined;
  const localPart = address.slice(0, at);
  // Postfix never splits these (split_addr()), nor, when '-' delimits, owner-foo and foo-request.
  if (/^(postmaster|mailer-daemon)$/i.test(localPart) || localPart.startsWith('"')) return undefined;
  if (delimiters.includes('-') && /^owner-|.-request$/i.test(localPart)) return undefined;
  const cut = [...localPart].findIndex((char, index) => index > 0 && delimiters.includes(char));
  if (cut < 0) return undefined;
  return `${[...localPart].slice(0, cut).join('')}${address.slice(at)}`;
}

/** The address as stored: domain a lower-cased A-label, local part as given. */
export function canonicalAddress(input: string): string {
  const { localPart, domain } = parseAddress(input);
  return `${localPart}@${domain}`;
}

/** The address as compared: domain a lower-cased A-label, local part lower-cased unless configured case-sensitive. */
export function normaliseAddress(input: string, options: AddressCaseOptions): string {
  const { localPart, domain } = parseAddress(input);
  return `${options.localPartCaseSensitive ? localPart : localPart.toLowerCase()}@${domain}`;
}

function isValidLocalPart(localPart: string): boolean {
  if (QUOTED_LOCAL.test(localPart)) return true;
  if (!DOT_ATOM_LOCAL.test(localPart)) return false;
  return !localPart.startsWith('.') && !localPart.endsWith('.') && !localPart.includes('..');
}
