import assert from 'node:assert/strict';

/**
 * Polls until `check` returns a value (not undefined); fails after `timeoutMs`.
 * Tests wait for a property this way rather than sleeping a fixed time and
 * asserting: how long something takes depends on the machine and its load
 * (CI, a loaded 2-core TCG host), whether it happens does not. The deadline is
 * only a bound for a test that would otherwise hang, so keep it generous.
 */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, pollMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
