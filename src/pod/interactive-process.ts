import type { GuestAgent } from './guest-agent.js';

/**
 * A process in a sandbox VM that a person drives through the operator tools:
 * an exec in a container (`podvisor exec`, `cp`), or a debug shell in the guest
 * itself (`podvisor console`, the SSH gateway). Built on the same process
 * routing as the CRI streaming sessions (GuestAgent.routeProcess). Output goes
 * to the `onOutput` given at the start, so none is lost before a listener
 * exists; `exited` follows the last output.
 */
export interface InteractiveProcess {
  write(data: Uint8Array): Promise<void>;
  closeStdin(): Promise<void>;
  resize(rows: number, cols: number): Promise<void>;
  /** Ends the process (SIGKILL), e.g. when its client went away. */
  kill(): Promise<void>;
  /** The exit code; 137 when the VM or its agent channel went away under it. */
  readonly exited: Promise<{ exitCode: number }>;
}

export type OutputListener = (stream: 'stdout' | 'stderr', data: Uint8Array) => void;

/** Routes the process (containerId, execId) to `onOutput`, then runs `start`, which makes the agent start it. */
export async function openInteractive(
  agent: GuestAgent,
  ref: { containerId: string; execId: string },
  onOutput: OutputListener,
  start: () => Promise<void>,
): Promise<InteractiveProcess> {
  let settle!: (r: { exitCode: number }) => void;
  const exited = new Promise<{ exitCode: number }>((resolve) => { settle = resolve; });
  const unroute = agent.routeProcess(ref.containerId, ref.execId, {
    output: onOutput,
    exit: (exitCode) => settle({ exitCode }),
    gone: () => settle({ exitCode: 137 }),
  });
  void exited.then(unroute);
  try {
    await start();
  } catch (e) {
    unroute();
    throw e;
  }
  return {
    exited,
    write: (data) => agent.writeStdin(ref.containerId, ref.execId, data),
    closeStdin: () => agent.closeStdin(ref.containerId, ref.execId),
    resize: (rows, cols) => agent.resizeTty(ref.containerId, ref.execId, rows, cols),
    kill: () => agent.killExec(ref.containerId, ref.execId),
  };
}
