import { requireId } from './fields.js';
import type { RuntimeRpc } from './rpc.js';

/**
 * Exec, Attach and PortForward: each checks the request, lets the streaming
 * server (src/streaming/server.ts, `svc.streaming`) prepare the session and
 * answers with its one-time URL. The session itself runs when the client
 * connects to that URL.
 */

export const exec: RuntimeRpc<'Exec'> = async (svc, req) => ({
  url: svc.streaming.exec({
    containerId: requireId(req.container_id, 'container_id'),
    cmd: req.cmd,
    tty: req.tty,
    stdin: req.stdin,
    stdout: req.stdout,
    stderr: req.stderr,
  }),
});

export const attach: RuntimeRpc<'Attach'> = async (svc, req) => ({
  url: svc.streaming.attach({
    containerId: requireId(req.container_id, 'container_id'),
    tty: req.tty,
    stdin: req.stdin,
    stdout: req.stdout,
    stderr: req.stderr,
  }),
});

export const portForward: RuntimeRpc<'PortForward'> = async (svc, req) => ({
  url: svc.streaming.portForward({ sandboxId: requireId(req.pod_sandbox_id, 'pod_sandbox_id'), ports: req.port }),
});
