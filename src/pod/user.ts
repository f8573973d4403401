import { invalidArgument } from '../errors.js';

/**
 * Who a container runs as, before /etc/passwd and /etc/group are consulted.
 * A user may be named (kubelet's run_as_username, or an image USER like
 * "nginx" or "app:staff"); names mean something only inside the image, so they
 * are resolved against the image's own files, never the host's.
 */
export interface UserRequest {
  uid?: number;
  username?: string;
  gid?: number;
  groupname?: string;
  supplementalGroups: number[];
  /** SupplementalGroupsPolicy Strict: only the given groups, none from the image's /etc/group. */
  strictGroups?: boolean;
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  /** HOME from the passwd entry when there is one; otherwise crun fills it in inside the container. */
  home?: string;
}

/** Parses an image's USER: "name", "uid", "uid:gid", "name:group", "uid:group", "name:gid". */
export function parseImageUser(user: string | undefined): Omit<UserRequest, 'supplementalGroups'> {
  const text = (user ?? '').trim();
  if (text === '') return { uid: 0 };
  const [u, g, ...rest] = text.split(':');
  if (rest.length > 0 || u === '') throw invalidArgument(`image USER "${text}" is not "user" or "user:group"`);
  const out: Omit<UserRequest, 'supplementalGroups'> = {};
  if (/^\d+$/.test(u!)) out.uid = Number(u);
  else out.username = u;
  if (g !== undefined && g !== '') {
    if (/^\d+$/.test(g)) out.gid = Number(g);
    else out.groupname = g;
  }
  return out;
}

interface PasswdEntry { name: string; uid: number; gid: number; home: string }
interface GroupEntry { name: string; gid: number; members: string[] }

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || line.startsWith('#')) continue;
    const uid = Number(f[2]), gid = Number(f[3]);
    if (Number.isInteger(uid) && Number.isInteger(gid)) out.push({ name: f[0]!, uid, gid, home: f[5]! });
  }
  return out;
}

function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || line.startsWith('#')) continue;
    const gid = Number(f[2]);
    if (Number.isInteger(gid)) out.push({ name: f[0]!, gid, members: f[3]!.split(',').filter(Boolean) });
  }
  return out;
}

/**
 * Resolves a user against the image's /etc/passwd and /etc/group contents
 * ('' when the image has no such file), following runc/containerd: a numeric
 * uid without a passwd entry runs with gid 0; a name that is not in passwd is
 * an error; the groups that list the user are added as supplementary groups.
 */
export function resolveUser(req: UserRequest, passwdText: string, groupText: string): ResolvedUser {
  const passwd = parsePasswd(passwdText);
  const groups = parseGroup(groupText);
  let entry: PasswdEntry | undefined;
  let uid: number;
  if (req.username !== undefined) {
    entry = passwd.find((p) => p.name === req.username);
    if (!entry) throw invalidArgument(`user "${req.username}" is not in the image's /etc/passwd; use a numeric uid or add the user to the image`);
    uid = entry.uid;
  } else {
    uid = req.uid ?? 0;
    entry = passwd.find((p) => p.uid === uid);
  }
  let gid = entry?.gid ?? 0;
  if (req.gid !== undefined) gid = req.gid;
  else if (req.groupname !== undefined) {
    const g = groups.find((x) => x.name === req.groupname);
    if (!g) throw invalidArgument(`group "${req.groupname}" is not in the image's /etc/group; use a numeric gid or add the group to the image`);
    gid = g.gid;
  }
  const additional = new Set<number>();
  if (entry && !req.strictGroups) for (const g of groups) if (g.members.includes(entry.name) && g.gid !== gid) additional.add(g.gid);
  for (const g of req.supplementalGroups) if (g !== gid) additional.add(g);
  const out: ResolvedUser = { uid, gid, additionalGids: [...additional].sort((a, b) => a - b) };
  if (entry?.home) out.home = entry.home;
  return out;
}
