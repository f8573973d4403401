/** Exit codes scripts can rely on (README "Operator CLI"). */
export const EXIT = {
  ok: 0,
  /** The operation failed, or `check` found the node cannot run pods. */
  failed: 1,
  /** Bad command line. */
  usage: 2,
  /** The sandbox, container or image named does not exist. */
  notFound: 3,
  /** podvisord is not running or its socket cannot be reached. */
  unavailable: 4,
} as const;

/** An error that ends the command with a chosen exit code and message. */
export class CliError extends Error {
  constructor(readonly exitCode: number, message: string) {
    super(message);
  }
}
