import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { unary } from '../helpers/daemon.js';
import { startPodTestEnv, type PodTestEnv } from '../helpers/pod-env.js';
import { containerConfig, rejectsWith, runToExit, sandboxConfig } from '../helpers/cri.js';

/**
 * Seccomp (and the AppArmor refusal) through the real CRI socket: profiles are
 * read on the host, embedded in the OCI spec and applied by crun inside one
 * shared sandbox VM; the container's own /proc/self/status and failing
 * syscalls are the evidence.
 */
describe('seccomp profiles', () => {
  let env: PodTestEnv;
  let sandboxId: string;
  let sandboxCfg: ReturnType<typeof sandboxConfig>;
  let blockHostname: string;
  let blockChmod: string;
  const rt = () => env.daemon.client.runtime;

  /** Runs `script` in a container with `securityContext` and returns its output lines and exit code. */
  async function run(name: string, script: string, securityContext: Record<string, unknown>) {
    const r = await runToExit(env.daemon.client, sandboxId, sandboxCfg,
      containerConfig(name, env.busybox, ['sh', '-c', script], { linux: { security_context: securityContext } }));
    return { exitCode: r.status.exit_code, out: r.log.map((l) => l.text) };
  }

  before(async () => {
    env = await startPodTestEnv();
    await env.pull(env.busybox);
    blockHostname = join(env.dir, 'block-hostname.json');
    writeFileSync(blockHostname, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['sethostname'], action: 'SCMP_ACT_ERRNO' }] }));
    blockChmod = join(env.dir, 'block-chmod.json');
    writeFileSync(blockChmod, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['chmod', 'fchmodat', 'fchmodat2'], action: 'SCMP_ACT_ERRNO' }] }));
    sandboxCfg = sandboxConfig('seccomp-e2e', join(env.dir, 'logs'));
    sandboxId = (await unary(rt(), 'RunPodSandbox', { config: sandboxCfg })).pod_sandbox_id;
  });

  after(async () => {
    await env?.dispose();
  });

  test('RuntimeDefault filters the container (Seccomp: 2) and refuses new user namespaces', async () => {
    const r = await run('default', 'grep "^Seccomp:" /proc/self/status; unshare -U true; echo "unshare=$?"', {
      seccomp: { profile_type: 'RuntimeDefault' },
    });
    assert.equal(r.exitCode, 0, r.out.join('\n'));
    assert.ok(r.out.some((l) => /^Seccomp:\s+2$/.test(l)), r.out.join('\n'));
    assert.ok(r.out.includes('unshare=1'), r.out.join('\n'));
    assert.ok(r.out.some((l) => /Operation not permitted/.test(l)), r.out.join('\n'));
  });

  test('Unconfined and unset mean no filter (Seccomp: 0)', async () => {
    for (const [name, sc] of [['unconfined', { seccomp: { profile_type: 'Unconfined' } }], ['unset', {}]] as const) {
      const r = await run(name, 'grep "^Seccomp:" /proc/self/status', sc);
      assert.ok(r.out.some((l) => /^Seccomp:\s+0$/.test(l)), `${name}: ${r.out.join('\n')}`);
    }
  });

  test('a Localhost profile denying sethostname makes hostname fail with EPERM even with CAP_SYS_ADMIN', async () => {
    const caps = { add_capabilities: ['SYS_ADMIN'] };
    const blocked = await run('no-hostname', 'hostname seccomp-e2e; echo "hostname=$?"', {
      capabilities: caps, seccomp: { profile_type: 'Localhost', localhost_ref: blockHostname },
    });
    assert.ok(blocked.out.includes('hostname=1'), blocked.out.join('\n'));
    assert.ok(blocked.out.some((l) => /sethostname: Operation not permitted/.test(l)), blocked.out.join('\n'));
    // The control: the same capability without the profile may set the (unchanged) pod hostname.
    const allowed = await run('hostname-ok', 'hostname seccomp-e2e; echo "hostname=$?"', {
      capabilities: caps, seccomp: { profile_type: 'Unconfined' },
    });
    assert.ok(allowed.out.includes('hostname=0'), allowed.out.join('\n'));
  });

  test('the deprecated seccomp_profile_path "localhost/<file>" applies the file too', async () => {
    const r = await run('no-chmod', 'chmod 400 /; echo "chmod=$?"', { seccomp_profile_path: `localhost/${blockChmod}` });
    assert.ok(r.out.includes('chmod=1'), r.out.join('\n'));
    assert.ok(r.out.some((l) => /Operation not permitted/.test(l)), r.out.join('\n'));
  });

  test('a missing profile file is NotFound naming it, and nothing is left behind', async () => {
    const missing = join(env.dir, 'no-such-profile.json');
    const config = containerConfig('missing-profile', env.busybox, ['true'], {
      linux: { security_context: { seccomp: { profile_type: 'Localhost', localhost_ref: missing } } },
    });
    await rejectsWith(unary(rt(), 'CreateContainer', { pod_sandbox_id: sandboxId, config, sandbox_config: sandboxCfg }),
      'NOT_FOUND', new RegExp(`seccomp profile ${missing} does not exist`));
    const { containers } = await unary(rt(), 'ListContainers', { filter: { pod_sandbox_id: sandboxId } });
    assert.ok(!containers.some((c) => c.metadata?.name === 'missing-profile'));
    // The name was not kept: the same container with a profile that exists is created.
    writeFileSync(missing, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW' }));
    const { container_id } = await unary(rt(), 'CreateContainer', { pod_sandbox_id: sandboxId, config, sandbox_config: sandboxCfg });
    await unary(rt(), 'RemoveContainer', { container_id });
  });

  test('a Localhost AppArmor profile is refused as UNIMPLEMENTED naming it', async () => {
    const config = containerConfig('apparmor', env.busybox, ['true'], {
      linux: { security_context: { apparmor: { profile_type: 'Localhost', localhost_ref: 'k8s-deny-write' } } },
    });
    await rejectsWith(unary(rt(), 'CreateContainer', { pod_sandbox_id: sandboxId, config, sandbox_config: sandboxCfg }),
      'UNIMPLEMENTED', /AppArmor profile "k8s-deny-write"/);
    const ok = await run('apparmor-default', 'true', { apparmor: { profile_type: 'RuntimeDefault' } });
    assert.equal(ok.exitCode, 0);
  });
});
