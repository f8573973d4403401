import { failedPrecondition, isPodvisorError, messageOf, notFound } from '../../errors.js';
import { logger } from '../../log.js';

/**
 * podvisor's way to libvirt: the N-API binding `@unraid/libvirt` (an optional dependency,
 * built against libvirt-dev; hack/install-deps with PODVISOR_WITH_LIBVIRT=1). It is loaded
 * only when a runtime handler asks for the libvirt backend, so nodes without libvirt never
 * need it. Only the calls podvisor makes are typed here, which also keeps the typecheck
 * independent of whether the optional package is installed.
 */

/** An opaque libvirt domain handle. */
export type DomainHandle = { readonly __domain: unique symbol };

interface NativeHypervisor {
  connectOpen(): Promise<void>;
  connectClose(): Promise<void>;
  domainCreateXML(xml: string): Promise<DomainHandle>;
  domainLookupByName(name: string): Promise<DomainHandle>;
  domainGetInfo(d: DomainHandle): Promise<{ state: number }>;
  domainGetUUIDString(d: DomainHandle): Promise<string>;
  domainDestroy(d: DomainHandle): Promise<void>;
}

interface BindingModule {
  Hypervisor: new (opts: { uri: string }) => NativeHypervisor;
}

export const BINDING_PACKAGE = '@unraid/libvirt';

/** virDomainState: 1 running, 2 blocked, 3 paused, 4 shutting down, 5 shut off, 6 crashed, 7 pmsuspended. */
export const DOMAIN_STATE_NAMES = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'] as const;

let loaded: Promise<BindingModule> | undefined;

function loadBinding(): Promise<BindingModule> {
  // A variable specifier: the package is optional, so neither tsc nor the bundler may require it.
  const specifier: string = BINDING_PACKAGE;
  loaded ??= (import(specifier) as Promise<BindingModule>).catch((e) => {
    loaded = undefined;
    throw failedPrecondition(`the libvirt VM backend needs the optional package ${BINDING_PACKAGE}, which is not installed or did not build ` +
      `(${messageOf(e)}); run hack/install-deps with PODVISOR_WITH_LIBVIRT=1 (installs libvirt-dev and builds it)`, e);
  });
  return loaded;
}

const log = logger('libvirt');

/** libvirt's "no such domain" (the binding gives no error code, only libvirt's message). */
export function isNoDomain(e: unknown): boolean {
  return /Domain not found|no domain with matching/i.test(messageOf(e));
}

/**
 * One connection to libvirtd, opened on first use and opened again when libvirtd restarted
 * under it (running domains stay: libvirtd reconnects to their QEMUs by itself).
 */
export class LibvirtConnection {
  private conn?: Promise<NativeHypervisor>;

  constructor(readonly uri: string) {}

  /** Fails FAILED_PRECONDITION, saying why, when the binding or libvirtd is not there. */
  async check(): Promise<void> {
    await this.call('connect', async () => undefined);
  }

  createXML(xml: string): Promise<DomainHandle> {
    return this.call('create the domain', (h) => h.domainCreateXML(xml));
  }

  /** The domain by name, or undefined when libvirt has none (a transient domain ends with its QEMU). */
  async lookup(name: string): Promise<DomainHandle | undefined> {
    try {
      return await this.call(`look up domain ${name}`, (h) => h.domainLookupByName(name));
    } catch (e) {
      if (isNoDomain(e)) return undefined;
      throw e;
    }
  }

  async state(name: string): Promise<(typeof DOMAIN_STATE_NAMES)[number] | undefined> {
    try {
      return await this.call(`read domain ${name}`, async (h) => {
        const info = await h.domainGetInfo(await h.domainLookupByName(name));
        return DOMAIN_STATE_NAMES[info.state] ?? 'nostate';
      });
    } catch (e) {
      if (isNoDomain(e)) return undefined;
      throw e;
    }
  }

  uuid(d: DomainHandle): Promise<string> {
    return this.call('read the domain uuid', (h) => h.domainGetUUIDString(d));
  }

  /** virDomainDestroy by name (SIGTERM, then SIGKILL); false when there was no such domain. */
  async destroy(name: string): Promise<boolean> {
    try {
      await this.call(`destroy domain ${name}`, async (h) => h.domainDestroy(await h.domainLookupByName(name)));
      return true;
    } catch (e) {
      if (isNoDomain(e)) return false;
      throw e;
    }
  }

  async close(): Promise<void> {
    const c = this.conn;
    this.conn = undefined;
    if (c) await c.then((h) => h.connectClose()).catch(() => undefined);
  }

  private open(): Promise<NativeHypervisor> {
    this.conn ??= (async () => {
      const { Hypervisor } = await loadBinding();
      const h = new Hypervisor({ uri: this.uri });
      try {
        await h.connectOpen();
      } catch (e) {
        throw failedPrecondition(`cannot connect to libvirt at ${this.uri}: ${messageOf(e)}`, e);
      }
      return h;
    })();
    this.conn.catch(() => (this.conn = undefined));
    return this.conn;
  }

  /** Runs `fn` on the connection; once more on a fresh connection if the old one broke (libvirtd restarted). */
  private async call<T>(what: string, fn: (h: NativeHypervisor) => Promise<T>): Promise<T> {
    const h = await this.open();
    try {
      return await fn(h);
    } catch (e) {
      if (isNoDomain(e) || !isBrokenConnection(e)) throw wrap(what, e);
      log.info({ uri: this.uri, err: messageOf(e) }, 'the libvirt connection broke (libvirtd restarted?); connecting again');
      this.conn = undefined;
      h.connectClose().catch(() => undefined);
      try {
        return await fn(await this.open());
      } catch (e2) {
        throw wrap(what, e2);
      }
    }
  }
}

function isBrokenConnection(e: unknown): boolean {
  return /client socket is closed|End of file while reading|Broken pipe|Connection reset|connection is closed|not connected|Cannot recv data|internal error: client/i.test(messageOf(e));
}

function wrap(what: string, e: unknown): Error {
  if (isNoDomain(e)) return notFound(`libvirt: cannot ${what}: ${messageOf(e)}`, e);
  if (isPodvisorError(e)) return e;
  return failedPrecondition(`libvirt: cannot ${what}: ${messageOf(e)}`, e);
}
