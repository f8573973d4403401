/**
 * Loads the CRI `runtime.v1` proto (proto/cri/api.proto) for grpc-js and hands
 * out typed service definitions (clients: client.ts).
 *
 * Shape of the JS objects handlers receive and return (CRI_LOADER_OPTIONS):
 * - field names exactly as in the proto (`pod_sandbox_id`, `CDI_devices`), so
 *   they can be searched against the CRI spec without a case mapping;
 * - 64-bit integers as decimal strings: CRI timestamps are nanoseconds since
 *   the epoch (~1.7e18) and would lose precision as JS numbers. Handlers may
 *   send numbers, strings or bigint-free `Long`s; they receive strings;
 * - enums as their names (`'CONTAINER_RUNNING'`), which read well in logs;
 * - absent fields filled with proto3 defaults (`''`, `0`, `[]`, `{}`; `null`
 *   for unset messages), so handlers need no `?? ''` for scalars;
 * - `bytes` as Buffer (the loader's default).
 *
 * The generated types in ./generated/ are made by hack/gen-cri-types with the
 * same options; change both together.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { internal } from '../errors.js';
import type { ProtoGrpcType } from './generated/api.js';
import type { RuntimeServiceDefinition } from './generated/runtime/v1/RuntimeService.js';
import type { ImageServiceDefinition } from './generated/runtime/v1/ImageService.js';

export type { RuntimeServiceClient, RuntimeServiceHandlers, RuntimeServiceDefinition } from './generated/runtime/v1/RuntimeService.js';
export type { ImageServiceClient, ImageServiceHandlers, ImageServiceDefinition } from './generated/runtime/v1/ImageService.js';

export const CRI_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** kubelet's own limit for CRI messages; large ListContainers answers need more than gRPC's 4 MiB default. */
export const CRI_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

const PROTO_RELATIVE_PATH = join('proto', 'cri', 'api.proto');

/**
 * Finds proto/cri/api.proto by walking up from this module, so the same code
 * does not depend on the working directory.
 */
function locateCriProto(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, PROTO_RELATIVE_PATH);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) {
      throw internal(`cannot find ${PROTO_RELATIVE_PATH} in any folder above ${fileURLToPath(import.meta.url)}; is the install complete?`);
    }
    dir = parent;
  }
}

export const CRI_PROTO_PATH = locateCriProto();

export const criPackageDefinition: protoLoader.PackageDefinition = protoLoader.loadSync(CRI_PROTO_PATH, CRI_LOADER_OPTIONS);

/** The loaded `runtime.v1` package: client constructors and message type definitions. */
export const criGrpc = grpc.loadPackageDefinition(criPackageDefinition) as unknown as ProtoGrpcType;

/** Pass to `server.addService(RuntimeService, handlers)`. */
export const RuntimeService: RuntimeServiceDefinition = criGrpc.runtime.v1.RuntimeService.service;

/** Pass to `server.addService(ImageService, handlers)`. */
export const ImageService: ImageServiceDefinition = criGrpc.runtime.v1.ImageService.service;
