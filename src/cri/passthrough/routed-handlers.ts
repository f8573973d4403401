import type * as grpc from '@grpc/grpc-js';
import { failedPrecondition, isPodvisorError, unimplemented, type PodvisorError } from '../../errors.js';
import { logger } from '../../log.js';
import type { Image } from '../generated/runtime/v1/Image.js';
import { sendChunks } from '../list-stream.js';
import type { ImageHandlerTable, RuntimeHandlerTable } from '../rpc.js';
import type { CriServices } from '../services.js';
import { mergeImages, mergeStatus } from './merge.js';
import { DEFAULT_CALL_TIMEOUT_MS, PULL_TIMEOUT_MS } from './remote-runtime.js';
import type { Passthrough } from './passthrough.js';
import { imageHandlerIsPassthrough, sandboxDestination } from './routing-rules.js';

/**
 * The CRI handler tables with the pass-through runtime behind them: every RPC
 * podvisor serves, routed or merged. podvisor's own handlers (src/cri/*.ts)
 * run unchanged for VM pods; this file only decides who answers.
 *
 * - RunPodSandbox: by the `[passthrough]` rules (routing-rules.ts);
 * - calls naming a sandbox or container id: by the route table (route-table.ts);
 * - List*, Stream*, stats lists, ListImages, ImageFsInfo: both answers joined; a
 *   pass-through runtime that does not answer leaves podvisor's part (logged), so
 *   VM pods stay visible and manageable while it is gone;
 * - Status: merge.ts; GetContainerEvents: both streams into one;
 * - Exec/Attach/PortForward of pass-through pods: the other runtime's own
 *   streaming URL goes to kubelet as is (docs/PASSTHROUGH.md says why).
 */

const log = logger('passthrough');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- one table holds unary and streaming handlers of every RPC
type Handler = (svc: CriServices, req: any, call: any) => Promise<unknown>;
type AnyReq = Record<string, unknown>;
type Table = Record<string, Handler | undefined>;

/** A pod start in the other runtime may pull its pause image first. */
const SANDBOX_START_TIMEOUT_MS = 10 * 60_000;
/** Status is asked every few seconds; a hung runtime must not hold it. */
const STATUS_TIMEOUT_MS = 10_000;
/** ExecSync timeout 0 means "none" in the CRI; a forwarded call still gets a bound. */
const EXEC_SYNC_MAX_MS = 60 * 60_000;
/** Added to a call's own timeout (StopContainer, ExecSync) for the runtime's work around it. */
const GRACE_MS = 30_000;

export function routedTables(
  local: { runtime: RuntimeHandlerTable; image: ImageHandlerTable },
  pt: Passthrough,
): { runtime: RuntimeHandlerTable; image: ImageHandlerTable } {
  const L = local.runtime as unknown as Table;
  const LI = local.image as unknown as Table;
  const mine = (table: Table, rpc: string) => async (svc: CriServices, req: AnyReq, call?: unknown): Promise<AnyReq> => {
    const h = table[rpc];
    if (!h) throw unimplemented(`podvisor does not implement ${rpc} for VM pods`);
    return (await (h as (s: CriServices, r: AnyReq, c?: unknown) => Promise<AnyReq>)(svc, req, call)) ?? {};
  };
  const remote = (rpc: string, req: AnyReq, timeoutMs = DEFAULT_CALL_TIMEOUT_MS) =>
    pt.remote.call(rpc as never, req as never, timeoutMs) as Promise<AnyReq>;
  const remoteImage = (rpc: string, req: AnyReq, timeoutMs = DEFAULT_CALL_TIMEOUT_MS) =>
    pt.remote.callImage(rpc as never, req as never, timeoutMs) as Promise<AnyReq>;

  /** The other runtime's answer to a node-wide question, or undefined when it cannot give one (logged once per outage). */
  const theirs = async (call: () => Promise<AnyReq>, rpc: string): Promise<AnyReq | undefined> => {
    try {
      const res = await call();
      pt.health.answered();
      return res;
    } catch (e) {
      if (isPodvisorError(e, 'UNIMPLEMENTED')) return undefined;
      pt.health.failed(e as PodvisorError, rpc);
      return undefined;
    }
  };

  // ---- calls that name one sandbox or container ----

  /**
   * `removed`: a removal RPC; once the other runtime has removed the object, or
   * says it has no such object (removal is idempotent in the CRI), its route is
   * forgotten.
   */
  const routed = (rpc: string, field: 'pod_sandbox_id' | 'container_id', opts: { timeoutMs?: (req: AnyReq) => number; removed?: (id: string) => void } = {}) =>
    async (svc: CriServices, req: AnyReq) => {
      const given = String(req[field] ?? '');
      const id = field === 'pod_sandbox_id' ? pt.routes.sandbox(given) : pt.routes.container(given);
      if (id === undefined) return mine(L, rpc)(svc, req);
      let res: AnyReq;
      try {
        res = await remote(rpc, { ...req, [field]: id }, opts.timeoutMs?.(req));
      } catch (e) {
        if (!opts.removed || !isPodvisorError(e, 'NOT_FOUND')) throw e;
        res = {};
      }
      opts.removed?.(id);
      return res;
    };
  const bySandbox = (rpc: string, removed?: (id: string) => void) => routed(rpc, 'pod_sandbox_id', { removed });
  const byContainer = (rpc: string, timeoutMs?: (req: AnyReq) => number, removed?: (id: string) => void) => routed(rpc, 'container_id', { timeoutMs, removed });

  const seconds = (v: unknown) => Math.max(0, Number(v) || 0) * 1000;

  // ---- lists: both answers joined ----

  const joined = (rpc: string, field: string, adopt?: (items: AnyReq[]) => void) => async (svc: CriServices, req: AnyReq): Promise<AnyReq> => {
    const [ours, other] = await Promise.all([mine(L, rpc)(svc, req), theirs(() => remote(rpc, req), rpc)]);
    const otherItems = (other?.[field] as AnyReq[] | undefined) ?? [];
    adopt?.(otherItems);
    return { ...ours, [field]: [...((ours[field] as AnyReq[] | undefined) ?? []), ...otherItems] };
  };

  const listPodSandbox = joined('ListPodSandbox', 'items', (items) =>
    pt.routes.adopt(items.map((s) => ({ id: String(s.id), handler: String(s.runtime_handler ?? '') })), []));
  const listContainers = joined('ListContainers', 'containers', (items) =>
    pt.routes.adopt([], items.map((c) => ({ id: String(c.id), sandboxId: String(c.pod_sandbox_id) }))));
  const listContainerStats = joined('ListContainerStats', 'stats');
  const listPodSandboxStats = joined('ListPodSandboxStats', 'stats');
  const listPodSandboxMetrics = joined('ListPodSandboxMetrics', 'pod_metrics');

  /** cri-api's Stream* form of a List*: the joined list, chunked. */
  const streamed = (list: (svc: CriServices, req: AnyReq) => Promise<AnyReq>, listField: string, streamField: string) =>
    async (svc: CriServices, req: AnyReq, call: grpc.ServerWritableStream<unknown, unknown>) => {
      const res = await list(svc, { filter: req.filter ?? null });
      await sendChunks((res[listField] as unknown[]) ?? [], call, (chunk) => ({ [streamField]: chunk }));
    };

  const listImages = async (svc: CriServices, req: AnyReq): Promise<AnyReq> => {
    const [ours, other] = await Promise.all([mine(LI, 'ListImages')(svc, req), theirs(() => remoteImage('ListImages', req), 'ListImages')]);
    return { images: mergeImages((ours.images as Image[]) ?? [], (other?.images as never[]) ?? []) };
  };

  // ---- containers: the image must be in the runtime that runs them ----

  /**
   * kubelet asks ImageStatus without naming a runtime (unless its
   * RuntimeClassInImageCriApi gate is on), and ImageStatus answers from
   * either store; it then pulls only if neither has the image, and creates
   * the container naming the image, often by id. So a container's image may
   * be in the other runtime's store only. Before CreateContainer it is pulled
   * into the runtime that will run the container, by the name the request
   * uses or else a tag or digest the other store knows it by (no credentials reach CreateContainer: an
   * image that needs them must be pulled through kubelet for that pod).
   */
  const ensureImageIn = async (where: 'vm' | 'passthrough', svc: CriServices, req: AnyReq): Promise<void> => {
    const spec = (req.config as { image?: AnyReq } | null)?.image;
    const ref = String(spec?.image ?? '');
    if (ref === '') return; // CreateContainer itself names the missing field
    const statusIn = async (w: 'vm' | 'passthrough') =>
      ((w === 'vm' ? await mine(LI, 'ImageStatus')(svc, { image: spec }) : await remoteImage('ImageStatus', { image: spec })).image ?? null) as Image | null;
    if (await statusIn(where)) return;
    // Where else it is: a failure to ask leaves the create to answer for the missing image.
    const known = await statusIn(where === 'vm' ? 'passthrough' : 'vm').catch(() => null);
    // The name CreateContainer uses first (a pull by digest alone would not make a tag resolve), then the other store's names.
    const names = [ref, ...(known?.repo_tags ?? []), ...(known?.repo_digests ?? [])].filter((n) => !/^(sha256:)?[0-9a-f]{64}$/.test(n));
    if (names.length === 0) {
      if (where === 'vm') return; // podvisor's own NOT_FOUND says to pull it
      throw failedPrecondition(`image ${ref} is not in the pass-through runtime and podvisor knows no name to pull it by; pull it by name first`);
    }
    log.info({ image: ref, pull: names[0], into: where }, 'pulling a container\'s image into the runtime that runs it');
    const pull = { image: { ...spec, image: names[0] }, sandbox_config: req.sandbox_config ?? null };
    if (where === 'vm') await mine(LI, 'PullImage')(svc, pull);
    else await remoteImage('PullImage', pull, PULL_TIMEOUT_MS);
  };

  const runtime: Table = {
    Version: mine(L, 'Version'),
    RuntimeConfig: mine(L, 'RuntimeConfig'),

    Status: async (svc: CriServices, req: AnyReq) => {
      const [ours, other] = await Promise.all([
        mine(L, 'Status')(svc, req),
        remote('Status', { verbose: false }, STATUS_TIMEOUT_MS).then((r) => { pt.health.answered(); return r; }, (e: PodvisorError) => { pt.health.failed(e, 'Status'); return e; }),
      ]);
      const merged = mergeStatus(ours as never, other as never, pt.rules) as AnyReq;
      if (req.verbose) {
        merged.info = {
          ...(ours.info as Record<string, string>),
          passthrough: JSON.stringify({ rules: pt.rules, pods: pt.routes.sandboxCount, reachable: !(other instanceof Error) }),
        };
      }
      return merged;
    },

    UpdateRuntimeConfig: async (svc: CriServices, req: AnyReq) => {
      await mine(L, 'UpdateRuntimeConfig')(svc, req);
      await remote('UpdateRuntimeConfig', req);
      return {};
    },

    RunPodSandbox: async (svc: CriServices, req: AnyReq) => {
      const handler = String(req.runtime_handler ?? '');
      if (sandboxDestination(pt.rules, pt.vmHandlers, req.config as never, handler) === 'vm') return mine(L, 'RunPodSandbox')(svc, req);
      const res = await remote('RunPodSandbox', req, SANDBOX_START_TIMEOUT_MS);
      const id = String(res.pod_sandbox_id);
      pt.routes.addSandbox(id, handler);
      const m = (req.config as { metadata?: AnyReq } | null)?.metadata;
      log.info({ sandbox: id, pod: `${m?.namespace}/${m?.name}`, handler }, 'pod runs in the pass-through runtime');
      return res;
    },
    StopPodSandbox: bySandbox('StopPodSandbox'),
    RemovePodSandbox: bySandbox('RemovePodSandbox', (id) => pt.routes.removeSandbox(id)),
    PodSandboxStatus: bySandbox('PodSandboxStatus'),
    UpdatePodSandboxResources: bySandbox('UpdatePodSandboxResources'),
    PortForward: bySandbox('PortForward'),
    PodSandboxStats: bySandbox('PodSandboxStats'),
    ListPodSandbox: listPodSandbox,
    StreamPodSandboxes: streamed(listPodSandbox, 'items', 'pod_sandboxes'),

    CreateContainer: async (svc: CriServices, req: AnyReq) => {
      const sandboxId = pt.routes.sandbox(String(req.pod_sandbox_id ?? ''));
      if (sandboxId === undefined) {
        await ensureImageIn('vm', svc, req);
        return mine(L, 'CreateContainer')(svc, req);
      }
      await ensureImageIn('passthrough', svc, req);
      const res = await remote('CreateContainer', { ...req, pod_sandbox_id: sandboxId });
      pt.routes.addContainer(String(res.container_id), sandboxId);
      return res;
    },
    StartContainer: byContainer('StartContainer'),
    StopContainer: byContainer('StopContainer', (req) => seconds(req.timeout) + GRACE_MS),
    RemoveContainer: byContainer('RemoveContainer', undefined, (id) => pt.routes.removeContainer(id)),
    ContainerStatus: byContainer('ContainerStatus'),
    ExecSync: byContainer('ExecSync', (req) => (seconds(req.timeout) > 0 ? Math.min(seconds(req.timeout), EXEC_SYNC_MAX_MS) + GRACE_MS : EXEC_SYNC_MAX_MS)),
    ReopenContainerLog: byContainer('ReopenContainerLog'),
    UpdateContainerResources: byContainer('UpdateContainerResources'),
    CheckpointContainer: byContainer('CheckpointContainer'),
    Exec: byContainer('Exec'),
    Attach: byContainer('Attach'),
    ContainerStats: byContainer('ContainerStats'),
    ListContainers: listContainers,
    StreamContainers: streamed(listContainers, 'containers', 'containers'),

    ListContainerStats: listContainerStats,
    ListPodSandboxStats: listPodSandboxStats,
    ListPodSandboxMetrics: listPodSandboxMetrics,
    StreamContainerStats: streamed(listContainerStats, 'stats', 'container_stats'),
    StreamPodSandboxStats: streamed(listPodSandboxStats, 'stats', 'pod_sandbox_stats'),
    StreamPodSandboxMetrics: streamed(listPodSandboxMetrics, 'pod_metrics', 'pod_metrics'),
    ListMetricDescriptors: async (svc: CriServices, req: AnyReq) => {
      const [ours, other] = await Promise.all([mine(L, 'ListMetricDescriptors')(svc, req), theirs(() => remote('ListMetricDescriptors', req), 'ListMetricDescriptors')]);
      const names = new Set(((ours.descriptors as AnyReq[]) ?? []).map((d) => d.name));
      return { descriptors: [...((ours.descriptors as AnyReq[]) ?? []), ...((other?.descriptors as AnyReq[]) ?? []).filter((d) => !names.has(d.name))] };
    },

    GetContainerEvents: (svc: CriServices, req: AnyReq, call: grpc.ServerWritableStream<unknown, unknown>) =>
      pt.events.merged(call, () => mine(L, 'GetContainerEvents')(svc, req, call).then(() => undefined)),
  };

  const image: Table = {
    PullImage: async (svc: CriServices, req: AnyReq) => {
      const spec = req.image as { runtime_handler?: string } | null;
      const handler = spec?.runtime_handler ?? '';
      let there = imageHandlerIsPassthrough(pt.rules, handler);
      if (!there && req.sandbox_config) {
        try {
          there = sandboxDestination(pt.rules, pt.vmHandlers, req.sandbox_config as never, handler) === 'passthrough';
        } catch {
          there = false; // a pod the rules refuse: RunPodSandbox says why; the pull itself is harmless here
        }
      }
      return there ? remoteImage('PullImage', req, PULL_TIMEOUT_MS) : mine(LI, 'PullImage')(svc, req);
    },
    ImageStatus: async (svc: CriServices, req: AnyReq) => {
      const spec = req.image as { runtime_handler?: string } | null;
      if (imageHandlerIsPassthrough(pt.rules, spec?.runtime_handler)) return remoteImage('ImageStatus', req);
      const ours = await mine(LI, 'ImageStatus')(svc, req);
      if (ours.image) return ours;
      return (await theirs(() => remoteImage('ImageStatus', req), 'ImageStatus')) ?? ours;
    },
    ListImages: listImages,
    StreamImages: streamed(listImages, 'images', 'images'),
    RemoveImage: async (svc: CriServices, req: AnyReq) => {
      const spec = req.image as { runtime_handler?: string } | null;
      if (imageHandlerIsPassthrough(pt.rules, spec?.runtime_handler)) return remoteImage('RemoveImage', req);
      await mine(LI, 'RemoveImage')(svc, req);
      // An image kubelet's GC picked from the joined list may be in either store, or both.
      await theirs(() => remoteImage('RemoveImage', req), 'RemoveImage');
      return {};
    },
    ImageFsInfo: async (svc: CriServices, req: AnyReq) => {
      const [ours, other] = await Promise.all([mine(LI, 'ImageFsInfo')(svc, req), theirs(() => remoteImage('ImageFsInfo', req), 'ImageFsInfo')]);
      const list = (r: AnyReq | undefined, f: string) => (r?.[f] as unknown[] | undefined) ?? [];
      return {
        image_filesystems: [...list(ours, 'image_filesystems'), ...list(other, 'image_filesystems')],
        container_filesystems: [...list(ours, 'container_filesystems'), ...list(other, 'container_filesystems')],
      };
    },
  };

  return { runtime: runtime as RuntimeHandlerTable, image: image as ImageHandlerTable };
}
