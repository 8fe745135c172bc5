#!/usr/bin/env node
/**
 * The `spillway` command: nouns then verbs, every store URL accepted.
 * Exit codes: 0 success, 1 runtime error, 2 usage error.
 *
 * @packageDocumentation
 */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { batchCommand } from './batch.ts';
import { scrubSecrets } from '../redact.ts';
import { describeError, exitCodeOf, isBrokenPipe } from './common.ts';
import { consumeCommand } from './consume.ts';
import { consumerCommand } from './consumer.ts';
import { demoCommand } from './demo.ts';
import { gcCommand } from './gc.ts';
import { groupCommand } from './group.ts';
import { ingestCommand } from './ingest.ts';
import { manifestCommand } from './manifest.ts';
import { produceCommand } from './produce.ts';
import { queueCommand } from './queue.ts';
import { serveCommand } from './serve.ts';
import { subscriptionCommand } from './subscription.ts';

// The AWS SDK warns about Node 20 on every run; the CLI's output is for the operator.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/** Builds the program; `main` runs it. */
export function program(): Command {
  const root = new Command('spillway')
    .description(
      'A durable ingestion buffer on object storage: inspect, produce, ingest files, consume, subscribe, serve over HTTP, collect, fence, demo.',
    )
    .version(pkg.version)
    .showSuggestionAfterError()
    .configureOutput({
      outputError: (text, write) =>
        write(`spillway: ${scrubSecrets(text.replace(/^error: /, '').trim())}\n`),
    });
  for (const c of [
    manifestCommand(),
    queueCommand(),
    subscriptionCommand(),
    groupCommand(),
    batchCommand(),
    produceCommand(),
    ingestCommand(),
    consumeCommand(),
    gcCommand(),
    consumerCommand(),
    serveCommand(),
    demoCommand(),
  ]) {
    root.addCommand(c);
  }
  const strict = (c: Command): void => {
    c.exitOverride();
    c.configureOutput({
      outputError: (text, write) =>
        write(`spillway: ${scrubSecrets(text.replace(/^error: /, '').trim())}\n`),
    });
    for (const sub of c.commands) strict(sub);
  };
  strict(root);
  return root;
}

/** Runs the command line and returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const verbose = argv.includes('--verbose');
  try {
    await program().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      )
        return 0;
      // Commander has printed the one-line usage error already.
      return 2;
    }
    if (isBrokenPipe(e)) return 0; // the reader went away (e.g. `| head`); nothing failed
    process.stderr.write(`spillway: ${describeError(e, verbose)}\n`);
    return exitCodeOf(e);
  }
}

// A closed stdout also surfaces as a stream error; the write that hit it reports it.
process.stdout.on('error', () => undefined);
process.exitCode = await main(process.argv.slice(2));
