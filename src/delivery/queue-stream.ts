// One queue as an endless, ordered stream: the shared core of a client's
// Receive and a guest DS's Subscribe. Entries are read in pages bounded by
// count and by bytes, and yielded one by one; an async generator only runs
// when its consumer pulls, and connect-node pulls the next entry only after
// the previous one was written out (it waits for the HTTP/2 stream's 'drain',
// i.e. for the peer's flow-control window), so a reader that does not read
// holds at most one page (and the entry being written) in memory:
// backpressure instead of buffers.
import { Code, ConnectError } from "@connectrpc/connect";
import { payloadLength, type QueueEntry, type QueueId, type Store } from "../store/port.js";

export const DEFAULT_PAGE_SIZE = 64;
/** Payload bytes per page (a single larger entry is a page of its own). */
export const DEFAULT_PAGE_BYTES = 1024 * 1024;

/** Where a stream reports the payload bytes it holds (read from the store, not yet passed on). */
export interface StreamBufferAccount {
  hold(bytes: number): void;
  release(bytes: number): void;
}

export interface QueueStreamOptions {
  /** Entries per store read (default 64). */
  readonly pageSize?: number;
  /** Payload bytes per store read (default 1 MiB; at least one entry). */
  readonly pageBytes?: number;
  /** Told about every page held and let go. */
  readonly buffer?: StreamBufferAccount;
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
  const pageBytes = options.pageBytes ?? DEFAULT_PAGE_BYTES;
  const signal = options.stop !== undefined ? AbortSignal.any([options.signal, options.stop]) : options.signal;
  if (resumeAfter > 0n) await store.ack(queue, resumeAfter);
  let pos = resumeAfter;
  // A sequence known to be committed: if reading after `pos` finds nothing
  // although `committed` > pos, the entries in between were acknowledged
  // meanwhile (by an Acknowledge call) and are skipped.
  let committed = pos;
  let held = 0;
  const release = (): void => {
    if (held > 0) options.buffer?.release(held);
    held = 0;
  };
  try {
    for (;;) {
      if (signal.aborted) break;
      const page = await store.read(queue, pos, pageSize, pageBytes);
      if (page.length > 0) {
        held = page.reduce((n, e) => n + payloadLength(e), 0);
        options.buffer?.hold(held);
        for (const entry of page) {
          yield entry;
          pos = entry.seq;
          if (signal.aborted) break;
        }
        release();
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
  } finally {
    release();
  }
  if (options.stop?.aborted === true && !options.signal.aborted) {
    throw new ConnectError("the service is shutting down", Code.Unavailable);
  }
}
