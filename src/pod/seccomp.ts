import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { invalidArgument, isPodvisorError, messageOf, notFound, unimplemented } from '../errors.js';
import type { ContainerConfig } from './records.js';
import type { OciSeccomp, OciSeccompArg, OciSeccompRule } from './oci-seccomp.js';
import { defaultSeccompProfile } from './seccomp-default.js';

/**
 * A container's seccomp setting → the OCI `linux.seccomp` object crun applies in the
 * guest. Meanings follow containerd:
 * - unset → no filter (kubelet sends RuntimeDefault when the pod asks for it);
 * - RuntimeDefault → podvisor's own profile (seccomp-default.ts);
 * - Unconfined → no filter;
 * - Localhost → the JSON profile file at `localhost_ref`, an absolute path on
 *   the node. It is read here, on the host, and embedded in the spec: the
 *   guest never sees host paths;
 * - privileged containers get no filter whatever they ask for.
 */

/** A container's seccomp choice with any profile file already read; capabilities are applied later. */
export type ContainerSeccomp =
  | { kind: 'unconfined' }
  | { kind: 'runtime-default' }
  | { kind: 'profile'; file: string; profile: OciSeccomp };

/** Profiles are small (Docker's default is ~20 KB); this only stops a wrong path from filling memory. */
const MAX_PROFILE_BYTES = 1024 * 1024;

const ACTIONS = new Set([
  'SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_NOTIFY',
]);
const OPERATORS = new Set([
  'SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ',
]);

/**
 * Checks and reads what a container's seccomp setting needs, before anything
 * is created: a Localhost profile that is missing, unreadable or not a seccomp
 * profile is an error naming the file.
 */
export async function loadContainerSeccomp(config: ContainerConfig): Promise<ContainerSeccomp> {
  const requested = config.security.seccomp;
  if (config.security.privileged || !requested || requested.type === 'Unconfined') return { kind: 'unconfined' };
  if (requested.type === 'RuntimeDefault') return { kind: 'runtime-default' };
  const file = requested.localhostRef;
  const subject = `container "${config.metadata.name}"`;
  if (file === '') throw invalidArgument(`${subject}: seccomp profile type Localhost needs localhost_ref, the profile file's absolute path on the node`);
  if (!isAbsolute(file)) throw invalidArgument(`${subject}: seccomp profile "${file}" must be an absolute path on the node`);
  return { kind: 'profile', file, profile: parseSeccompProfile(await readProfileFile(file, subject), file) };
}

/**
 * Reads a Localhost profile through one descriptor (L1): opened without
 * following a symlink at its last component, checked with fstat on that same
 * descriptor, and read with a limit, so a swap between check and read (to
 * /dev/zero, or a symlink to a secret) cannot get past the size cap.
 */
async function readProfileFile(file: string, subject: string): Promise<string> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const info = await fh.stat();
    if (!info.isFile()) throw invalidArgument(`${subject}: seccomp profile ${file} is not a regular file`);
    if (info.size > MAX_PROFILE_BYTES) throw invalidArgument(`${subject}: seccomp profile ${file} is larger than ${MAX_PROFILE_BYTES} bytes`);
    const buf = Buffer.alloc(MAX_PROFILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, length, buf.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_PROFILE_BYTES) throw invalidArgument(`${subject}: seccomp profile ${file} is larger than ${MAX_PROFILE_BYTES} bytes`);
    }
    return buf.subarray(0, length).toString('utf8');
  } catch (e) {
    if (isPodvisorError(e)) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw notFound(`${subject}: seccomp profile ${file} does not exist on this node`);
    if (code === 'ELOOP') throw invalidArgument(`${subject}: seccomp profile ${file} is a symlink; name the profile file itself`);
    if (code !== undefined) throw invalidArgument(`${subject}: seccomp profile ${file} cannot be read (${code})`, e);
    throw e;
  } finally {
    await fh?.close();
  }
}

/**
 * Validates an OCI-format seccomp profile and keeps only the fields of the OCI
 * spec (Docker-only keys such as archMap are dropped, as containerd does). crun
 * would reject most mistakes too, but only at StartContainer and without the
 * file's name; here they fail CreateContainer with it.
 */
export function parseSeccompProfile(text: string, file: string): OciSeccomp {
  const bad = (what: string) => invalidArgument(`seccomp profile ${file}: ${what}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the file's first bytes, and the file may be any root-readable one (L1).
    throw bad('not valid JSON');
  }
  if (!isObject(doc)) throw bad('not a JSON object');
  if (doc.listenerPath !== undefined && doc.listenerPath !== '') {
    throw unimplemented(`seccomp profile ${file}: listenerPath (a seccomp notify agent on the host) cannot receive notifications from inside the pod VM`);
  }
  const out: OciSeccomp = { defaultAction: action(doc.defaultAction, 'defaultAction', bad, file) };
  if (doc.defaultErrnoRet !== undefined) out.defaultErrnoRet = integer(doc.defaultErrnoRet, 'defaultErrnoRet', bad);
  if (doc.architectures !== undefined) out.architectures = strings(doc.architectures, 'architectures', bad);
  if (doc.flags !== undefined) out.flags = strings(doc.flags, 'flags', bad);
  if (doc.syscalls !== undefined && doc.syscalls !== null) {
    if (!Array.isArray(doc.syscalls)) throw bad('syscalls is not a list');
    out.syscalls = doc.syscalls.map((rule, i) => syscallRule(rule, `syscalls[${i}]`, bad, file));
  }
  return out;
}

function syscallRule(rule: unknown, where: string, bad: (w: string) => Error, file: string): OciSeccompRule {
  if (!isObject(rule)) throw bad(`${where} is not an object`);
  const names = strings(rule.names, `${where}.names`, bad);
  if (names.length === 0) throw bad(`${where}.names is empty`);
  const out: OciSeccompRule = { names, action: action(rule.action, `${where}.action`, bad, file) };
  if (rule.errnoRet !== undefined) out.errnoRet = integer(rule.errnoRet, `${where}.errnoRet`, bad);
  if (rule.args !== undefined && rule.args !== null) {
    if (!Array.isArray(rule.args)) throw bad(`${where}.args is not a list`);
    out.args = rule.args.map((arg, j) => {
      const at = `${where}.args[${j}]`;
      if (!isObject(arg)) throw bad(`${at} is not an object`);
      const index = integer(arg.index, `${at}.index`, bad);
      if (index > 5) throw bad(`${at}.index ${index} is out of range (a syscall has at most 6 arguments, 0-5)`);
      if (typeof arg.op !== 'string' || !OPERATORS.has(arg.op)) throw bad(`${at}.op ${JSON.stringify(arg.op)} is not a seccomp comparison (SCMP_CMP_*)`);
      const cmp: OciSeccompArg = { index, value: integer(arg.value, `${at}.value`, bad), op: arg.op };
      if (arg.valueTwo !== undefined) cmp.valueTwo = integer(arg.valueTwo, `${at}.valueTwo`, bad);
      return cmp;
    });
  }
  return out;
}

function action(v: unknown, where: string, bad: (w: string) => Error, file: string): string {
  if (typeof v !== 'string' || !ACTIONS.has(v)) throw bad(`${where} ${JSON.stringify(v)} is not a seccomp action (SCMP_ACT_*)`);
  if (v === 'SCMP_ACT_NOTIFY') {
    throw unimplemented(`seccomp profile ${file}: ${where} SCMP_ACT_NOTIFY needs a seccomp agent on the host, which cannot serve a pod VM`);
  }
  return v;
}

/** JSON numbers are doubles: a value past 2^53 would be re-serialized as a different number, so it is refused. */
function integer(v: unknown, where: string, bad: (w: string) => Error): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${where} must be a non-negative integer below 2^53`);
  return v;
}

function strings(v: unknown, where: string, bad: (w: string) => Error): string[] {
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad(`${where} must be a list of strings`);
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The `linux.seccomp` of the spec, now that the container's capabilities are known; undefined means no filter. */
export function ociSeccomp(choice: ContainerSeccomp | undefined, capabilities: readonly string[]): OciSeccomp | undefined {
  switch (choice?.kind) {
    case 'runtime-default': return defaultSeccompProfile(capabilities);
    case 'profile': return choice.profile;
    default: return undefined;
  }
}
