/** "ADDR:PORT" or "[v6]:PORT" → host and port, or the reason it is not one. */
export function parseListenAddress(value: string): { host: string; port: number } | string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) return `must be "ADDR:PORT" (e.g. "127.0.0.1:9464" or "[::1]:9464"), got "${value}"`;
  return { host: m[1] ?? m[2]!, port };
}

/** For TableReader.string checks: '' (unset) or a valid address. */
export function listenAddressProblem(value: string): string | undefined {
  if (value === '') return undefined;
  const parsed = parseListenAddress(value);
  return typeof parsed === 'string' ? parsed : undefined;
}

/** The admin socket sits next to the CRI socket: `/run/podvisor/podvisor.sock` → `/run/podvisor/podvisor-admin.sock`. */
export function defaultAdminSocket(criSocket: string): string {
  return criSocket.endsWith('.sock') ? `${criSocket.slice(0, -'.sock'.length)}-admin.sock` : `${criSocket}-admin`;
}
