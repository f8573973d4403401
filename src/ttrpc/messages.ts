import protobuf from 'protobufjs';

/**
 * ttRPC's own envelope messages (package `ttrpc`), with their published field
 * numbers. Declared as JSON so the guest bundle needs no .proto file at run time.
 */
const root = protobuf.Root.fromJSON({
  nested: {
    ttrpc: {
      nested: {
        KeyValue: { fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
        Request: {
          fields: {
            service: { type: 'string', id: 1 },
            method: { type: 'string', id: 2 },
            payload: { type: 'bytes', id: 3 },
            timeoutNano: { type: 'int64', id: 4 },
            metadata: { rule: 'repeated', type: 'KeyValue', id: 5 },
          },
        },
        Status: {
          fields: {
            code: { type: 'int32', id: 1 },
            message: { type: 'string', id: 2 },
          },
        },
        Response: {
          fields: {
            status: { type: 'Status', id: 1 },
            payload: { type: 'bytes', id: 2 },
          },
        },
      },
    },
  },
});

const RequestType = root.lookupType('ttrpc.Request');
const ResponseType = root.lookupType('ttrpc.Response');

export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Uint8Array;
  timeoutNano: number;
  metadata: { key: string; value: string }[];
}

export interface TtrpcStatus {
  code: number;
  message: string;
}

export interface TtrpcResponse {
  status?: TtrpcStatus;
  payload: Uint8Array;
}

const toObjectOptions = { longs: Number, defaults: true, arrays: true } as const;

export function encodeRequest(req: Partial<TtrpcRequest> & { service: string; method: string }): Uint8Array {
  return RequestType.encode(RequestType.fromObject(req)).finish();
}

/** Throws on bytes that are not a Request; callers turn that into an error reply. */
export function decodeRequest(bytes: Uint8Array): TtrpcRequest {
  return RequestType.toObject(RequestType.decode(bytes), toObjectOptions) as TtrpcRequest;
}

export function encodeResponse(res: TtrpcResponse): Uint8Array {
  return ResponseType.encode(ResponseType.fromObject(res)).finish();
}

export function decodeResponse(bytes: Uint8Array): TtrpcResponse {
  const obj = ResponseType.toObject(ResponseType.decode(bytes), { ...toObjectOptions, defaults: false }) as Partial<TtrpcResponse>;
  return { status: obj.status ? { code: obj.status.code ?? 0, message: obj.status.message ?? '' } : undefined, payload: obj.payload ?? new Uint8Array() };
}
