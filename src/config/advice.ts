import type { Config } from './schema.js';

/** Postfix's default maximal_queue_lifetime: how long it may retry one message. */
export const POSTFIX_QUEUE_LIFETIME_HOURS = 120;

/** A setting that is valid but probably not what the admin wants, and why. */
export interface ConfigAdvice {
  readonly setting: string;
  readonly message: string;
}

/**
 * Advice on a valid configuration, for `lacre check` and the log of `lacre serve`: nothing here stops Lacre,
 * since each case can be what an admin means (a Postfix with a shorter queue lifetime, say).
 */
export function configAdvice(config: Config): ConfigAdvice[] {
  const advice: ConfigAdvice[] = [];
  const retention = config.relay.delivered_retention_hours;
  if (retention > 0 && retention < POSTFIX_QUEUE_LIFETIME_HOURS) {
    advice.push({
      setting: 'relay.delivered_retention_hours',
      message:
        `${retention} h is shorter than Postfix's default maximal_queue_lifetime (${POSTFIX_QUEUE_LIFETIME_HOURS} h): ` +
        'a message Postfix retries after its records were purged sends its delivered copies again; ' +
        "fine if your maximal_queue_lifetime is at most this long",
    });
  }
  return advice;
}
