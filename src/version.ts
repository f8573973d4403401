import { createRequire } from 'node:module';

/** Who this runtime is, for Version, `--version` and the logs. A leaf: anything may import it. */
export const RUNTIME_NAME = 'podvisor';

export const PODVISOR_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
