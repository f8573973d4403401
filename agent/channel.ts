import { closeSync, constants, openSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { notFound } from '../src/errors.js';
import { logger } from '../src/log.js';

const log = logger('agent-channel');

export const AGENT_PORT_NAME = 'podvisor.agent';

/** Finds /dev/vportNpM whose virtio-serial port name is `name`. */
export function findPort(name = AGENT_PORT_NAME, sysDir = '/sys/class/virtio-ports'): string {
  let entries: string[] = [];
  try {
    entries = readdirSync(sysDir);
  } catch {
    // no virtio-serial driver bound yet
  }
  for (const entry of entries) {
    try {
      if (readFileSync(`${sysDir}/${entry}/name`, 'utf8').trim() === name) return `/dev/${entry}`;
    } catch {
      // a port without a name
    }
  }
  throw notFound(`no virtio-serial port named ${name} under ${sysDir}`);
}

interface PipeHandle { open(fd: number): number }
type PipeBinding = { Pipe: new (type: number) => PipeHandle; constants: { SOCKET: number } };

/**
 * Opens a pollable character device (the agent port, /dev/kmsg) as a
 * net.Socket. The fd is wrapped in a libuv pipe handle (non-blocking,
 * epoll-driven): Node's file streams use the thread pool and cost 1.5–3.5 ms
 * per round trip on the port, the pipe handle about 1 ms.
 */
export function openCharDevice(path: string): net.Socket {
  const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  // pipe_wrap is internal but stable across Node 18–22; it is the only way to
  // get an evented socket on a character device.
  const binding = (process as unknown as { binding(name: string): PipeBinding }).binding('pipe_wrap');
  const handle = new binding.Pipe(binding.constants.SOCKET);
  const err = handle.open(fd);
  if (err) {
    closeSync(fd);
    throw new Error(`cannot wrap ${path} in a pipe handle (uv error ${err})`);
  }
  return new net.Socket({ handle, readable: true, writable: true } as unknown as net.SocketConstructorOpts);
}

/**
 * Whether the host side of the port is connected, from debugfs
 * (`host_connected: 1`); undefined when debugfs does not say.
 */
function hostConnected(path: string): boolean | undefined {
  try {
    const info = readFileSync(`/sys/kernel/debug/virtio-ports/${path.replace('/dev/', '')}`, 'utf8');
    const match = /host_connected:\s*(\d)/.exec(info);
    return match ? match[1] === '1' : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Serves the port forever, one host connection at a time. While no host is
 * connected a read on the port returns EOF at once, and data the host sends
 * while the guest has the port closed is dropped by the driver. So the port
 * is opened only once debugfs says the host is there, and after the host
 * leaves (EOF) it is closed and the wait starts again. `session` gets each
 * connection and resolves when it has ended.
 */
export async function servePort(session: (socket: net.Socket) => Promise<void>, name = AGENT_PORT_NAME): Promise<never> {
  let path: string | undefined;
  for (;;) {
    try {
      path ??= findPort(name);
      let connected = hostConnected(path);
      while (connected === false) {
        await sleep(5);
        connected = hostConnected(path);
      }
      const socket = openCharDevice(path);
      const started = Date.now();
      await session(socket);
      // Without debugfs an immediate EOF is the only sign of "no host": back off a little.
      if (connected === undefined && Date.now() - started < 20) await sleep(20);
      else log.info('host disconnected; waiting for the next connection');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'agent port not usable yet');
      path = undefined;
      await sleep(100);
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
