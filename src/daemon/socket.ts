import { mkdirSync, unlinkSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { failedPrecondition, messageOf, internal } from '../errors.js';

/**
 * Makes the listening path ready: creates its directory, refuses to start
 * when a live daemon already answers there, and removes a socket left by a
 * daemon that crashed (nothing answers on it).
 */
export async function prepareSocketPath(path: string): Promise<void> {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o711 });
  } catch (e) {
    throw internal(`cannot create the socket directory ${dirname(path)}: ${messageOf(e)}`);
  }
  let isSocket = false;
  try {
    isSocket = statSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw failedPrecondition(`${path} exists and is not a socket; remove it or choose another --listen path`);
  if (await answers(path)) {
    throw failedPrecondition(`another podvisord is already serving on ${path}; stop it first or choose another --listen path`);
  }
  unlinkSync(path); // stale: its daemon is gone
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(path);
    const done = (alive: boolean) => {
      sock.destroy();
      resolve(alive);
    };
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
    // A listener whose backlog is full is still alive: never steal its path.
    sock.setTimeout(2000, () => done(true));
  });
}
