/** Runs `scripts/<script> start`: the variables it exported, or why it failed. */
export function startServer(
  script: string,
  env?: NodeJS.ProcessEnv,
): { env: Record<string, string>; error?: undefined } | { error: string; env?: undefined };
/** Runs `scripts/<script> stop`. */
export function stopServer(script: string, env?: NodeJS.ProcessEnv): void;
