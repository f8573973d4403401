/** Bytes received from registries (response bodies), for benchmarks and logs. */
export class TransferStats {
  bytesReceived = 0;
  requests = 0;
  reset(): void {
    this.bytesReceived = 0;
    this.requests = 0;
  }
}
