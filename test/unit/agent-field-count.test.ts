import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codec } from '../../src/agent-protocol/schema.js';
import type { WatchVolumesResponse } from '../../src/agent-protocol/types.js';

// The host counts a guest reply's fields before decoding it (a reply's cost is the objects it decodes to).

const watch = codec<WatchVolumesResponse>('WatchVolumesResponse');

test('fields are counted at every depth, packed or not, and counting stops past the limit', () => {
  const legit = watch.encode({ changed: ['a'], readIds: ['a'], reads: [{ exists: true, entries: Array.from({ length: 10 }, (_, i) => ({ path: `p${i}`, kind: 'file', mode: 0o644, stamp: '1:2:3:4', data: Buffer.from('x') })) }] });
  // changed, read_ids, reads, exists, and 10 entries of 1 + 5 fields.
  assert.equal(watch.countFields(legit, 1e9), 4 + 10 * 6);
  const flood = Buffer.alloc(1 << 20);
  for (let i = 0; i < flood.length; i += 4) flood.set([0x12, 0x02, 0x12, 0x00], i); // reads: [{ entries: [{}] }], again and again
  // Bytes that throw once read (wire type 7) end the flood: a count that walked on past the limit would reach
  // them and throw, so returning shows it stopped (whatever this machine's speed; timing it would show less).
  const stopsEarly = Buffer.concat([flood, Buffer.from([0xff, 0xff, 0xff, 0x0f])]);
  assert.throws(() => watch.countFields(stopsEarly, 1e9));
  assert.equal(watch.countFields(stopsEarly, 1000), 1001);
});

test('bytes that are not the message throw, as decoding them would', () => {
  assert.throws(() => watch.countFields(Buffer.from([0x12, 0x7f, 0x12]), 100));
  assert.throws(() => watch.countFields(Buffer.from([0x12, 0x04, 0x12, 0x10, 0x00, 0x00]), 100), /past/);
  assert.throws(() => watch.countFields(Buffer.from([0xff, 0xff, 0xff, 0x0f]), 100));
});
