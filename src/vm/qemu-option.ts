/** QEMU option values use ',' as separator; a literal comma is written twice. */
export function escapeOptionValue(v: string): string {
  return v.replaceAll(',', ',,');
}
