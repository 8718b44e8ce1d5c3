// One queue as an endless, ordered stream: the shared core of a client's
// Receive and a guest DS's Subscribe. Entries are read in bounded pages and
// yielded one by one; an async generator only runs when its consumer pulls
// (connect-node pulls when the HTTP/2 stream can take more), so a slow reader
// holds at most one page in memory: backpressure instead of buffers.
import { Code, ConnectError } from "@connectrpc/connect";
import type { QueueEntry, QueueId, Store } from "../store/port.js";

export const DEFAULT_PAGE_SIZE = 64;

export interface QueueStreamOptions {
  /** Entries per store read (default 64). */
  readonly pageSize?: number;
  /** The call's signal (client gone, server aborting): the stream returns. */
  readonly signal: AbortSignal;
  /** Our own stop (service closing): the stream fails with Unavailable so the reader resumes elsewhere. */
  readonly stop?: AbortSignal;
  /** When caught up, before waiting: bring more entries into the queue (true: some came). */
  readonly refill?: () => Promise<boolean>;
  /** Wait for more (default: an append to the queue); resolves with a committed sequence if it knows one. */
  readonly wait?: (afterSeq: bigint, signal: AbortSignal) => Promise<bigint | undefined>;
}

/**
 * Entries of `queue` with seq > resumeAfter, in order, waiting for appends
 * when caught up. Entries at or below `resumeAfter` are acknowledged (deleted)
 * first: a reader resuming after N has processed everything up to N.
 */
export async function* streamQueue(
  store: Store,
  queue: QueueId,
  resumeAfter: bigint,
  options: QueueStreamOptions,
): AsyncGenerator<QueueEntry> {
  const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
  const signal = options.stop !== undefined ? AbortSignal.any([options.signal, options.stop]) : options.signal;
  if (resumeAfter > 0n) await store.ack(queue, resumeAfter);
  let pos = resumeAfter;
  // A sequence known to be committed: if reading after `pos` finds nothing
  // although `committed` > pos, the entries in between were acknowledged
  // meanwhile (by an Acknowledge call) and are skipped.
  let committed = pos;
  for (;;) {
    if (signal.aborted) break;
    const page = await store.read(queue, pos, pageSize);
    if (page.length > 0) {
      for (const entry of page) {
        yield entry;
        pos = entry.seq;
        if (signal.aborted) break;
      }
      continue;
    }
    if (committed > pos) {
      pos = committed;
      continue;
    }
    try {
      if (options.refill !== undefined && (await options.refill())) continue;
      const known = options.wait !== undefined ? await options.wait(pos, signal) : await store.waitForAppend(queue, pos, signal);
      if (known !== undefined) committed = known;
    } catch (err) {
      if (signal.aborted) break;
      throw err;
    }
  }
  if (options.stop?.aborted === true && !options.signal.aborted) {
    throw new ConnectError("the service is shutting down", Code.Unavailable);
  }
}
