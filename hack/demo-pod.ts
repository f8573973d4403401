// The demo's client: runs one pod and one container on podvisord through the CRI socket
// with podvisor's own gRPC client, prints the container's output and leaves the pod running.
//   node --import tsx hack/demo-pod.ts --socket PATH --image REF [--logs DIR]
//   node --import tsx hack/demo-pod.ts --socket PATH --remove
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { status as grpcStatus } from '@grpc/grpc-js';
import { criClient, unary } from '../src/cri/client.js';

const { values: flags } = parseArgs({
  options: { socket: { type: 'string' }, image: { type: 'string' }, logs: { type: 'string' }, remove: { type: 'boolean' } },
});
if (!flags.socket) throw new Error('--socket is required');
const client = criClient(flags.socket);
const rt = client.runtime;
const DEMO_LABEL = { 'podvisor.io/demo': 'true' };

async function removeDemoPods(): Promise<number> {
  const { items } = await unary(rt, 'ListPodSandbox', { filter: { label_selector: DEMO_LABEL } });
  for (const s of items) await unary(rt, 'RemovePodSandbox', { pod_sandbox_id: s.id });
  return items.length;
}

try {
  if (flags.remove) {
    console.log(`demo: removed ${await removeDemoPods()} demo pod(s)`);
  } else {
    if (!flags.image) throw new Error('--image is required');
    await removeDemoPods();
    const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      const r = await fn();
      console.log(`demo: ${what} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
      return r;
    };
    const image = flags.image;
    await step(`pulled ${image}`, () => unary(client.image, 'PullImage', { image: { image } }));
    const logDir = flags.logs ?? '/var/log/pods/podvisor-demo';
    const config = {
      metadata: { name: 'hello', namespace: 'demo', uid: `demo-${Date.now()}`, attempt: 0 },
      hostname: 'hello-pod',
      log_directory: logDir,
      labels: DEMO_LABEL,
    };
    const { pod_sandbox_id } = await step('RunPodSandbox booted the pod VM', () => unary(rt, 'RunPodSandbox', { config }));
    const { container_id } = await step('CreateContainer', () => unary(rt, 'CreateContainer', {
      pod_sandbox_id,
      sandbox_config: config,
      config: {
        metadata: { name: 'hello' },
        image: { image },
        command: ['sh', '-c', 'echo "Hello from a container in its own VM!"; echo "hostname: $(hostname)"; echo "kernel: $(uname -r)"; id'],
        log_path: 'hello.log',
      },
    }));
    await step('StartContainer', () => unary(rt, 'StartContainer', { container_id }));
    let status;
    for (;;) {
      status = (await unary(rt, 'ContainerStatus', { container_id })).status!;
      if (status.state === 'CONTAINER_EXITED') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    console.log(`demo: the container exited with code ${status.exit_code} (${status.reason}); its output (${status.log_path}):\n`);
    for (const line of (await readFile(status.log_path, 'utf8')).split('\n').filter(Boolean)) {
      console.log(`  ${line.split(' ').slice(3).join(' ')}`);
    }
    const info = JSON.parse((await unary(rt, 'PodSandboxStatus', { pod_sandbox_id, verbose: true })).info.info ?? '{}');
    console.log(`\ndemo: pod ${pod_sandbox_id.slice(0, 13)} is still running in QEMU pid ${info.vm?.pid} (${info.vm?.accelerator}); ` +
      `crictl --runtime-endpoint unix://${flags.socket} pods|ps|logs work against it`);
  }
} catch (e) {
  // One readable line, never a stack: a gRPC error's details carry podvisord's message
  // (for a VM that died during boot: the sandbox id and QEMU's own words).
  const err = e as { details?: string; code?: number; message?: string };
  const code = err.code === undefined ? '' : ` (${grpcStatusName(err.code)})`;
  console.error(`demo: failed${code}: ${err.details || err.message || String(e)}`);
  process.exitCode = 1;
} finally {
  client.close();
}

function grpcStatusName(code: number): string {
  return Object.entries(grpcStatus).find(([, v]) => v === code)?.[0] ?? String(code);
}
