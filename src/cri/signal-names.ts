import { constants } from 'node:os';
import type { Signal } from './generated/runtime/v1/Signal.js';

/**
 * The CRI's Signal enum names and Linux signal numbers. The real-time ones
 * are spelled SIGRTMINPLUSn / SIGRTMAXMINUSn; as glibc sees them SIGRTMIN is
 * 34 and SIGRTMAX 64 (the kernel's first two are taken by the C library).
 */
const SIGRTMIN = 34;
const SIGRTMAX = 64;

export function criSignalNumber(name: string): number | undefined {
  if (name === 'SIGRTMIN') return SIGRTMIN;
  if (name === 'SIGRTMAX') return SIGRTMAX;
  const plus = /^SIGRTMINPLUS(\d+)$/.exec(name);
  if (plus) return SIGRTMIN + Number(plus[1]);
  const minus = /^SIGRTMAXMINUS(\d+)$/.exec(name);
  if (minus) return SIGRTMAX - Number(minus[1]);
  if (name === 'SIGCLD') return constants.signals.SIGCHLD;
  if (name === 'SIGPOLL') return constants.signals.SIGIO;
  return (constants.signals as Record<string, number>)[name];
}

/** A signal number as the CRI names it; RUNTIME_DEFAULT for a number the enum has no name for. */
export function criSignalName(n: number): Signal {
  if (n === SIGRTMIN) return 'SIGRTMIN';
  if (n === SIGRTMAX) return 'SIGRTMAX';
  if (n > SIGRTMIN && n < SIGRTMAX) return (n - SIGRTMIN <= 15 ? `SIGRTMINPLUS${n - SIGRTMIN}` : `SIGRTMAXMINUS${SIGRTMAX - n}`) as Signal;
  // Node lists the usual name of a number first (SIGABRT before SIGIOT, SIGIO before SIGPOLL).
  const name = Object.entries(constants.signals).find(([, v]) => v === n)?.[0];
  return (name ?? 'RUNTIME_DEFAULT') as Signal;
}
