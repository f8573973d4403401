import { constants } from 'node:os';
import { invalidArgument } from '../errors.js';

/** An image StopSignal ("SIGQUIT", "QUIT", "3") as a signal number; SIGTERM when empty. */
export function parseStopSignal(text: string | undefined): number {
  const s = (text ?? '').trim().toUpperCase();
  if (s === '') return constants.signals.SIGTERM;
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = (s.startsWith('SIG') ? s : `SIG${s}`) as keyof typeof constants.signals;
    const n = constants.signals[name];
    if (n !== undefined) return n;
  }
  throw invalidArgument(`image StopSignal "${text}" is not a signal name or number`);
}

export const SIGKILL = constants.signals.SIGKILL;
