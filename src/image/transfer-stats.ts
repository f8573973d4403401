import { imagePullBytesTotal } from '../metrics/metrics.js';

/** Bytes received from registries (response bodies), for benchmarks and logs. */
export class TransferStats {
  requests = 0;
  private received = 0;

  get bytesReceived(): number {
    return this.received;
  }

  set bytesReceived(n: number) {
    // Every byte counted here also counts for /metrics, which a benchmark's reset() does not rewind.
    if (n > this.received) imagePullBytesTotal.inc(n - this.received);
    this.received = n;
  }

  reset(): void {
    this.received = 0;
    this.requests = 0;
  }
}
