// The guard that refuses new requests near the open-file limit, as servers/aiohttp_common.py's
// FdGuard does for the Python servers: while this process is within `headroom` files of its
// soft RLIMIT_NOFILE it answers HTTP 503 + Retry-After (an `unavailable` error envelope), logs
// one line at most every 10 s and counts the refusals at /metrics, instead of letting
// accept() fail with EMFILE (a reset for the client, nothing in the log). /healthz and
// /metrics are still answered: monitoring must see a full server. Its count is the files open
// once the server listens plus the server's open connections (no /proc walk per request).
import { readdirSync, readFileSync } from "node:fs";

export const FD_HEADROOM = 64;
export const RETRY_AFTER_SECONDS = 5;
export const UNGUARDED = new Set(["/healthz", "/metrics"]);

/** Files this process has open now (/proc/self/fd; 0 where there is none). */
export function openFiles(): number {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return 0;
  }
}

/** This process's soft open-file limit (/proc/self/limits; Bun raises it to the hard one as
 * it starts). Infinity where it cannot be read: the guard then never refuses. */
export function softLimit(): number {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
    return soft === undefined || soft === "unlimited" ? Infinity : Number(soft);
  } catch {
    return Infinity;
  }
}

export class FdGuard {
  /** Requests refused at the limit so far. */
  refused = 0;
  private logged = -Infinity;

  constructor(
    /** The soft RLIMIT_NOFILE of this process. */
    readonly limit: number = softLimit(),
    /** Files open before the first connection (listeners, broker, the runtime's own). */
    public base: number = openFiles(),
    /** The server's open connections now (set once it listens). */
    public connections: () => number = () => 0,
  ) {}

  get headroom(): number {
    return Math.max(FD_HEADROOM, Math.floor(this.limit / 50));
  }

  get inUse(): number {
    return this.base + this.connections();
  }

  full(): boolean {
    return this.inUse >= this.limit - this.headroom;
  }

  /** Count one refusal, log it (at most every 10 s), and say why. */
  refuse(): string {
    this.refused++;
    const why = `server at its open-file limit (${this.inUse} of ${this.limit} in use, ` +
      `${this.headroom} kept free); retry in ${RETRY_AFTER_SECONDS} s or use another instance`;
    const now = performance.now();
    if (now - this.logged >= 10_000) {
      this.logged = now;
      console.error(`refusing new connections: ${why} (${this.refused} refused so far); raise ` +
        "the hard nofile limit or run more processes (serve elysia --processes N)");
    }
    return why;
  }

  render(): string {
    return "# HELP sobranie_open_files Files open (estimate the fd guard uses).\n" +
      "# TYPE sobranie_open_files gauge\n" +
      `sobranie_open_files ${this.inUse}\n` +
      "# HELP sobranie_open_files_limit Soft RLIMIT_NOFILE of the process.\n" +
      "# TYPE sobranie_open_files_limit gauge\n" +
      `sobranie_open_files_limit ${this.limit}\n` +
      "# HELP sobranie_fd_limit_refused_total Requests refused with 503 near the open-file limit.\n" +
      "# TYPE sobranie_fd_limit_refused_total counter\n" +
      `sobranie_fd_limit_refused_total ${this.refused}\n`;
  }
}
