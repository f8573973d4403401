export { TtrpcClient, type CallOptions, type TtrpcClientOptions } from './client.js';
export { SESSION_METADATA_KEY, TtrpcServer, type CallContext, type ServerStream, type StreamHandler, type UnaryHandler } from './server.js';
export { encodeFrame, FrameDecoder, FrameFlag, FrameType, HEADER_LENGTH, MAX_MESSAGE_LENGTH, type Frame } from './frame.js';
export { encodeRequest, decodeResponse } from './messages.js';
