// Manual smoke run: node --import tsx test/pod/smoke.ts
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv } from './env.js';

const env = await startPodTestEnv({ logLevel: 'debug' });
try {
  const t0 = Date.now();
  console.log('pulled', await env.pull(env.busybox), Date.now() - t0);
  const c = env.daemon.client.runtime;
  const config = { metadata: { name: 'smoke', namespace: 'default', uid: 'u1', attempt: 0 }, hostname: 'smoke', log_directory: `${env.dir}/logs` };
  const t1 = Date.now();
  const { pod_sandbox_id } = await unary(c, 'RunPodSandbox', { config });
  console.log('sandbox', pod_sandbox_id, Date.now() - t1);
  const { container_id } = await unary(c, 'CreateContainer', {
    pod_sandbox_id, sandbox_config: config,
    config: { metadata: { name: 'hello' }, image: { image: env.busybox }, command: ['sh', '-c', 'echo hello from $(hostname); id; sleep 1000'], log_path: 'hello.log' },
  });
  console.log('container', container_id);
  await unary(c, 'StartContainer', { container_id });
  await new Promise((r) => setTimeout(r, 1000));
  console.log(await unary(c, 'ContainerStatus', { container_id }));
  console.log('exec', await unary(c, 'ExecSync', { container_id, cmd: ['cat', '/etc/hostname'], timeout: 5 }));
  console.log(JSON.stringify(await unary(c, 'ContainerStats', { container_id })));
  console.log(await unary(c, 'ListPodSandbox', {}));
} catch (e) {
  console.error('FAILED', e);
  console.error(env.daemon.output().slice(-6000));
} finally {
  await env.dispose();
}
