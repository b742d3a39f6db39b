/** `lacre wks init`: the Web Key Service's submission key pair. */
import type { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { createSubmissionKey, writeSubmissionKey } from '../web/wks-key.js';
import type { CliContext } from './context.js';

export function registerWksCommands(program: Command, context: CliContext): void {
  const wks = program.command('wks').description('the Web Key Service (key submission by mail to web.wks_submission_address)');
  wks
    .command('init')
    .description('create the submission key pair at web.wks_key_path (0600) and print its fingerprint')
    .option('--force', 'replace an existing key file')
    .action(async (options: { force?: boolean }, command: Command) => {
      const config = context.configFrom(command);
      const address = config.web.wks_submission_address;
      if (address === undefined) throw new ConfigError('web.wks_submission_address is not set: name the submission address first');
      const { armored, fingerprint } = await createSubmissionKey(address);
      await writeSubmissionKey(config.web.wks_key_path, armored, { force: options.force ?? false });
      process.stdout.write(`${fingerprint}\n`);
      process.stderr.write(`lacre: WKS submission key for ${address} written to ${config.web.wks_key_path}\n`);
    });
}
