/**
 * What the streaming server needs from the pods: start a process (exec) or
 * join the container's own (attach) with its I/O, and open a TCP connection
 * to a port inside a pod. `src/pod/stream-service.ts` provides it over the
 * guest agent; the streaming code never sees the agent or the CRI.
 */
export interface ProcessSink {
  /** Output of the process, in order; `exited` settles only after the last of it. */
  output(stream: 'stdout' | 'stderr', data: Uint8Array): void;
}

export interface ProcessIo {
  /** Resolves once the guest has taken the bytes (the caller sends the next piece only then). */
  writeStdin(data: Uint8Array): Promise<void>;
  closeStdin(): Promise<void>;
  resize(size: { rows: number; cols: number }): Promise<void>;
  /**
   * Holds output back while the client is slow. Exec: the process blocks on
   * its pipe. Attach: not supported (the container must not stall for a slow
   * viewer); returns false and the caller bounds its buffer instead.
   */
  pauseOutput(paused: boolean): Promise<boolean>;
  /** Exec: the process's exit code. Attach: the container's. */
  readonly exited: Promise<number>;
  /** The session is over: exec kills a process still running; attach detaches (stdin_once closes stdin). */
  release(): Promise<void>;
}

export interface ExecOptions {
  cmd: string[];
  tty: boolean;
  stdin: boolean;
  ttySize?: { rows: number; cols: number };
}

export interface AttachOptions {
  tty: boolean;
  stdin: boolean;
}

export interface PortConnection {
  write(data: Uint8Array): Promise<void>;
  /** Half-close: the pod side reads EOF. */
  closeWrite(): Promise<void>;
  /** Drops the connection. */
  close(): void;
  pause(paused: boolean): Promise<void>;
  /** Settles when the pod side has finished sending (rejects on an error). */
  readonly ended: Promise<void>;
}

export interface StreamingBackend {
  /** Throws NOT_FOUND / FAILED_PRECONDITION when the container cannot be exec'd in (checked again at connect). */
  checkContainer(containerId: string): string;
  /** As checkContainer, plus what attach needs: stdin only if the container has it, the container's tty setting. */
  checkAttach(containerId: string, opts: AttachOptions): string;
  checkSandbox(sandboxId: string): string;
  exec(containerId: string, opts: ExecOptions, sink: ProcessSink): Promise<ProcessIo>;
  attach(containerId: string, opts: AttachOptions, sink: ProcessSink): Promise<ProcessIo>;
  dialPort(sandboxId: string, port: number, onData: (data: Uint8Array) => void): Promise<PortConnection>;
}
