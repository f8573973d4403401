import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';

/**
 * Keeps a log file that another process appends to (QEMU's stderr, opened O_APPEND) under
 * `maxBytes`: when it is larger, its last `keepBytes` are kept and the rest dropped. Safe
 * against the writer because an O_APPEND write always lands at the current end, also after
 * a truncate. A few bytes written between the read and the truncate can be lost.
 */
export function capLogFile(path: string, maxBytes: number, keepBytes: number): boolean {
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch {
    return false;
  }
  try {
    const size = fstatSync(fd).size;
    if (size <= maxBytes) return false;
    const keep = Buffer.alloc(Math.min(keepBytes, size));
    const n = readSync(fd, keep, 0, keep.length, size - keep.length);
    ftruncateSync(fd, 0);
    const marker = Buffer.from(`[podvisor: ${size - n} earlier bytes dropped; this log is kept under ${maxBytes} bytes]\n`);
    const out = Buffer.concat([marker, keep.subarray(0, n)]);
    writeSync(fd, out, 0, out.length, 0);
    return true;
  } finally {
    closeSync(fd);
  }
}
