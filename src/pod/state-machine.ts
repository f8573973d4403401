import { failedPrecondition } from '../errors.js';
import type { ContainerState, SandboxState } from './records.js';

/**
 * The legal moves of a container. A container never goes back: CREATED can only
 * start or be given up (EXITED without running, as when its sandbox stops);
 * UNKNOWN is where recovery puts a container whose fate the agent could not tell,
 * and it resolves to EXITED.
 */
const CONTAINER_MOVES: Record<ContainerState, readonly ContainerState[]> = {
  created: ['running', 'exited', 'unknown'],
  running: ['exited', 'unknown'],
  unknown: ['exited', 'running'],
  exited: [],
};

const SANDBOX_MOVES: Record<SandboxState, readonly SandboxState[]> = {
  ready: ['notready'],
  notready: [],
};

export function canMoveContainer(from: ContainerState, to: ContainerState): boolean {
  return CONTAINER_MOVES[from].includes(to);
}

export function assertContainerMove(id: string, from: ContainerState, to: ContainerState, action: string): void {
  if (!canMoveContainer(from, to)) {
    throw failedPrecondition(`cannot ${action} container ${id}: it is ${from.toUpperCase()}` +
      (from === 'exited' ? ' (a container runs once; create a new one)' : ''));
  }
}

export function canMoveSandbox(from: SandboxState, to: SandboxState): boolean {
  return SANDBOX_MOVES[from].includes(to);
}
