/** Typed failures; src/filter/reply.ts is the one place that turns them into SMTP replies. */
export class LacreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}
/** The key store could not be read or written (temporary). */
export class DatabaseUnavailableError extends LacreError {}
/** The relay (Postfix reinjection listener) refused or could not be reached. */
export class RelayError extends LacreError {
  constructor(message: string, readonly permanent: boolean, readonly responseCode?: number, options?: { cause?: unknown }) {
    super(message, options);
  }
}
/** The message itself cannot be processed as received (permanent). */
export class MessageRejectedError extends LacreError {
  constructor(message: string, readonly enhancedCode: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
/** The client did not send the whole message within smtp.data_timeout_seconds (the connection is closed). */
export class DataTimeoutError extends LacreError {}
/** Message larger than smtp.max_size. */
export class MessageTooLargeError extends LacreError {}
/** Policy says a recipient must not get this message now (e.g. on_unusable_key = tempfail/reject). */
export class RecipientPolicyError extends LacreError {
  constructor(message: string, readonly permanent: boolean, readonly recipient: string) {
    super(message);
  }
}
/** The address is in a box domain (incoming_box.domains) but has no Incoming Box: refused for good. */
export class NoBoxError extends LacreError {
  constructor(readonly recipient: string) {
    super('no Incoming Box for this recipient');
  }
}
/** An Incoming Box did not take a copy; `status` is its HTTP answer (undefined: unreachable or timed out). */
export class BoxDeliveryError extends LacreError {
  constructor(message: string, readonly status?: number, options?: { cause?: unknown }) {
    super(message, options);
  }
}
/**
 * A copy streaming to the relay while the input was read failed (`cause`, the copy's own failure): that stops the
 * whole message, and nothing is delivered. `recipients` are that copy's, which LMTP answers with its failure.
 */
export class StreamedCopyError extends LacreError {
  constructor(
    readonly recipients: readonly string[],
    override readonly cause: unknown,
  ) {
    super(errorMessage(cause), { cause });
  }
}
/** A key was refused at import. */
export class KeyRejectedError extends LacreError {}
/** Configuration is invalid; message names the key. */
export class ConfigError extends LacreError {}
/** An HTTP listener refuses a request: the status, the short body the client reads, and headers such as Allow. */
export class HttpError extends LacreError {
  constructor(
    readonly status: number,
    readonly body = '',
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(body === '' ? `HTTP ${status}` : `HTTP ${status}: ${body}`);
  }
}

/** The message of an Error, or the value as text: for replies and log lines about anything thrown. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
