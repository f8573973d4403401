import { createWriteStream, renameSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

/** The agent and guest kernel log of one sandbox, next to its console log in the VM run directory. */
export const GUEST_LOG_FILE = 'agent.log';
/** One file's bound; at that size it becomes agent.log.1 (replacing the older one), so a VM keeps at most twice this. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
/** Lines waiting for the disk; past this a chatty guest loses lines instead of growing podvisord's memory. */
const MAX_PENDING_BYTES = 1024 * 1024;

/**
 * Writes the log lines a guest forwards (`podvisor logs` reads them). The guest
 * decides how much it says, so the file rotates at a fixed size and lines that
 * arrive faster than the disk takes them are dropped and counted.
 */
export class GuestLogFile {
  private stream: WriteStream;
  private bytes: number;
  private dropped = 0;

  constructor(private readonly runDir: string) {
    this.bytes = sizeOf(this.path());
    this.stream = this.open();
  }

  append(line: { source: string; level: string; message: string; timeMs: number }): void {
    if (this.stream.writableLength > MAX_PENDING_BYTES) {
      this.dropped++;
      return;
    }
    let text = `${new Date(line.timeMs || Date.now()).toISOString()} ${line.source} ${line.level} ${line.message.replace(/\n/g, ' ')}\n`;
    if (this.dropped) {
      text = `${new Date().toISOString()} podvisor warn ${this.dropped} guest log lines dropped (the guest logged faster than the disk took them)\n${text}`;
      this.dropped = 0;
    }
    if (this.bytes + text.length > MAX_FILE_BYTES) this.rotate();
    this.bytes += Buffer.byteLength(text);
    this.stream.write(text);
  }

  close(): void {
    this.stream.end();
  }

  private path(): string {
    return join(this.runDir, GUEST_LOG_FILE);
  }

  private open(): WriteStream {
    const s = createWriteStream(this.path(), { flags: 'a', mode: 0o600 });
    s.on('error', () => undefined); // the run directory went away with the sandbox
    return s;
  }

  private rotate(): void {
    this.stream.end();
    try {
      renameSync(this.path(), `${this.path()}.1`);
    } catch {
      // nothing to rotate
    }
    this.bytes = 0;
    this.stream = this.open();
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
