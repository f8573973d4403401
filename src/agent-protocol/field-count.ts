import protobuf from 'protobufjs';

/**
 * How many fields a message's bytes hold, at every depth, counted before it is
 * decoded. Decoding is what a peer's bytes cost: a 4 MiB reply of empty
 * repeated submessages (2 bytes each) decodes to two million objects, ~680 MiB
 * and ~25 s of a loaded host's event loop, while walking the same bytes costs
 * one pass and no objects. Stops counting once past `limit`. Throws on bytes
 * that are not a message of `type` (as decoding would).
 */
export function countFields(type: protobuf.Type, bytes: Uint8Array, limit: number): number {
  const reader = protobuf.Reader.create(bytes);
  let count = 0;
  const walk = (t: protobuf.Type, end: number): void => {
    while (reader.pos < end && count <= limit) {
      const tag = reader.uint32();
      const wire = tag & 7;
      const field = t.fieldsById[tag >>> 3];
      field?.resolve();
      count++;
      if (wire === 2 && field?.resolvedType instanceof protobuf.Type) {
        const len = reader.uint32();
        const sub = reader.pos + len;
        if (sub > end) throw new Error(`${t.name}.${field.name}: submessage runs past its parent`);
        walk(field.resolvedType, sub);
        reader.pos = sub;
      } else if (wire === 2 && field?.repeated && field.type !== 'string' && field.type !== 'bytes') {
        const len = reader.uint32(); // packed scalars: at least one byte each
        count += len;
        reader.skip(len);
      } else {
        reader.skipType(wire);
      }
    }
    if (reader.pos > end) throw new Error(`${t.name}: a field runs past the end of its message`);
  };
  walk(type, bytes.length);
  return count;
}
