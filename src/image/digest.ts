import { createHash, type Hash } from 'node:crypto';
import { invalidArgument } from '../errors.js';

/** A content digest `algorithm:hex`, as OCI and the Distribution API use them. */
export interface ParsedDigest {
  readonly algorithm: 'sha256' | 'sha512';
  readonly hex: string;
}

const HEX_LENGTH = { sha256: 64, sha512: 128 } as const;

export function parseDigest(digest: string): ParsedDigest {
  const m = /^(sha256|sha512):([a-f0-9]+)$/.exec(digest);
  if (!m || m[2]!.length !== HEX_LENGTH[m[1] as 'sha256' | 'sha512']) {
    throw invalidArgument(`"${digest}" is not a supported digest (expected sha256:<64 hex> or sha512:<128 hex>)`);
  }
  return { algorithm: m[1] as 'sha256' | 'sha512', hex: m[2]! };
}

export function sha256Digest(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The OCI chain id of a layer stack: the digest that names the stack of the given diff ids. */
export function chainId(diffIds: readonly string[]): string | undefined {
  let chain: string | undefined;
  for (const diffId of diffIds) chain = chain === undefined ? diffId : sha256Digest(`${chain} ${diffId}`);
  return chain;
}

/** Incremental hashing with the algorithm a digest names. */
export class Digester {
  private readonly hash: Hash;
  readonly algorithm: ParsedDigest['algorithm'];
  constructor(algorithm: ParsedDigest['algorithm'] = 'sha256') {
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }
  digest(): string {
    return `${this.algorithm}:${this.hash.digest('hex')}`;
  }
}

/** Digest of `data` computed with the algorithm `expected` names. */
export function digestWithAlgorithmOf(expected: string, data: Uint8Array): string {
  const d = new Digester(parseDigest(expected).algorithm);
  d.update(data);
  return d.digest();
}
