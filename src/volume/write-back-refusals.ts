import { isPodvisorError, messageOf, type ErrorCode } from '../errors.js';

/**
 * What the copy mode's write-back refused or could not get from a guest, kept
 * for the operator (PodSandboxStatus / ContainerStatus verbose info) and not
 * only in podvisord's log. A guest decides how often it is refused and what its
 * answers hold, so the list is bounded: the last MAX_REFUSALS distinct refusals,
 * a repeat of the newest one counted instead of added, each message cut to
 * MAX_MESSAGE_CHARS. Messages are the host's own words; the only guest text in
 * them is what the host quotes (entry paths cut to 200 characters, a guest error
 * status cut by the agent client), so nothing unbounded from a guest is echoed,
 * and control characters are escaped.
 * Kept in memory only: a restarted podvisord starts an empty list.
 */

/** Distinct refusals kept per sandbox. */
export const MAX_REFUSALS = 8;
/** Characters kept of each refusal's message. */
export const MAX_MESSAGE_CHARS = 512;
/** Containers named per refusal (a volume shared by more is cut to these). */
const MAX_CONTAINERS = 8;

/**
 * The failures an operator is told about: the host refused the guest's answer
 * (RESOURCE_EXHAUSTED: over a bound; INTERNAL: broke the copy protocol or could
 * not be decoded) or the guest gave none within the call's deadline.
 */
const TOLD: ReadonlySet<ErrorCode> = new Set(['RESOURCE_EXHAUSTED', 'INTERNAL', 'DEADLINE_EXCEEDED']);

export interface WriteBackRefusal {
  /** The volume's host path, or undefined for the long poll as a whole (its answer names no one volume). */
  volume?: string;
  /** Containers that mounted the volume when it was refused. */
  containers: string[];
  code: ErrorCode;
  message: string;
  /** How many times in a row this refusal came (the guest repeating itself). */
  count: number;
  first: string;
  last: string;
}

export class WriteBackRefusals {
  private readonly list: WriteBackRefusal[] = [];
  /** Every refusal counted, repeats included. */
  total = 0;

  /** Keeps `e` if it is one the operator is told about; returns whether it was. */
  record(e: unknown, volume?: { hostPath: string; containers: string[] }): boolean {
    if (!isPodvisorError(e) || !TOLD.has(e.code)) return false;
    const message = cut(messageOf(e));
    const now = new Date().toISOString();
    this.total++;
    const newest = this.list.at(-1);
    if (newest && newest.code === e.code && newest.message === message && newest.volume === volume?.hostPath) {
      newest.count++;
      newest.last = now;
      newest.containers = volume ? volume.containers.slice(0, MAX_CONTAINERS) : [];
      return true;
    }
    this.list.push({
      ...(volume ? { volume: volume.hostPath } : {}),
      containers: volume ? volume.containers.slice(0, MAX_CONTAINERS) : [],
      code: e.code, message, count: 1, first: now, last: now,
    });
    if (this.list.length > MAX_REFUSALS) this.list.shift();
    return true;
  }

  /** The kept refusals, oldest first; with `containerId`, those of volumes it mounted and the long poll's. */
  recent(containerId?: string): WriteBackRefusal[] {
    return this.list
      .filter((r) => containerId === undefined || r.volume === undefined || r.containers.includes(containerId))
      .map((r) => ({ ...r, containers: [...r.containers] }));
  }
}

/**
 * Cut to MAX_MESSAGE_CHARS, control characters written as \uXXXX: a guest's error status is quoted as it
 * came, and `podvisor inspect` prints these to an operator's terminal (no escape sequences from a guest).
 */
function cut(text: string): string {
  const safe = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return safe.length <= MAX_MESSAGE_CHARS ? safe : `${safe.slice(0, MAX_MESSAGE_CHARS)}… (cut)`;
}
