/**
 * The Kubernetes `Status` object a v4/v5 remote-command server writes on the
 * error stream when the command ends: Success, or Failure with reason
 * NonZeroExitCode and the code as an `ExitCode` cause (what kubectl and crictl
 * turn into their own exit code), or Failure with the error message.
 */
export function successStatus(): string {
  return JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' });
}

export function exitCodeStatus(cmd: string[], exitCode: number): string {
  return JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: exitCodeMessage(cmd, exitCode),
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] },
  });
}

export function errorStatus(message: string): string {
  return JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: 'InternalError',
    details: { causes: [{ message }] },
    code: 500,
  });
}

export function exitCodeMessage(cmd: string[], exitCode: number): string {
  return `command terminated with non-zero exit code: error executing command ${JSON.stringify(cmd)}, exit code ${exitCode}`;
}
