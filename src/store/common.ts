// Pieces shared by the adapters: the in-process append notifier behind
// subscribe/waitForAppend, value checks, and small conversions.

import { StoreClosedError, StoreRangeError } from "./errors.js";
import type { AppendListener, QueueEntry, QueueId, RateLimitRule, Unsubscribe } from "./port.js";

/**
 * A queue entry stored with a shared prefix. Its payload (prefix || own bytes)
 * is joined the first time it is read: a reader that takes the parts (the
 * FanoutService, which sends a head once per epoch) copies nothing.
 */
export function prefixedEntry(seq: bigint, enqueuedAt: number, id: string, bytes: Uint8Array, rest: Uint8Array): QueueEntry {
  let joined: Uint8Array | undefined;
  return {
    seq,
    enqueuedAt,
    prefix: { id, length: bytes.length, bytes, rest },
    get payload(): Uint8Array {
      if (joined === undefined) {
        joined = new Uint8Array(bytes.length + rest.length);
        joined.set(bytes);
        joined.set(rest, bytes.length);
      }
      return joined;
    },
  };
}

/** Largest value a signed 64-bit column holds: adapters store epochs and sequences there. */
export const MAX_INT64 = (1n << 63n) - 1n;

export function checkUint63(what: string, v: bigint): bigint {
  if (typeof v !== "bigint" || v < 0n || v > MAX_INT64) {
    throw new StoreRangeError(`${what} must be a bigint in [0, 2^63-1], got ${String(v)}`);
  }
  return v;
}

export const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

/** A plain Uint8Array view of driver bytes (Buffer, Binary), so callers see the port's plain types. */
export function plainBytes(b: Uint8Array | null | undefined): Uint8Array {
  if (b == null) return new Uint8Array(0);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Fixed-window bookkeeping shared by the adapters. */
export function rateWindow(rule: RateLimitRule, now: number): { start: number; end: number; cost: number } {
  if (!(rule.windowMs > 0) || !(rule.limit >= 0)) throw new StoreRangeError("rate limit needs windowMs > 0 and limit >= 0");
  const start = Math.floor(now / rule.windowMs) * rule.windowMs;
  return { start, end: start + rule.windowMs, cost: rule.cost ?? 1 };
}

/**
 * In-process fan-out of "queue X now ends at seq N" after commits. The SQLite
 * adapter feeds it after each transaction; the MongoDB adapter feeds it from
 * its change stream (or polling), so waiters on any instance wake up.
 */
export class AppendNotifier {
  readonly #listeners = new Map<QueueId, Set<AppendListener>>();
  readonly #closers = new Set<(err: Error) => void>();
  #closed = false;

  subscribe(queue: QueueId, listener: AppendListener): Unsubscribe {
    if (this.#closed) throw new StoreClosedError();
    let set = this.#listeners.get(queue);
    if (!set) {
      set = new Set();
      this.#listeners.set(queue, set);
    }
    // Wrap so the same function may subscribe twice and unsubscribe independently.
    const entry: AppendListener = (s) => listener(s);
    set.add(entry);
    return () => {
      const s = this.#listeners.get(queue);
      if (!s) return;
      s.delete(entry);
      if (s.size === 0) this.#listeners.delete(queue);
    };
  }

  /** Queues that currently have listeners (the MongoDB adapter polls only these). */
  watchedQueues(): QueueId[] {
    return [...this.#listeners.keys()];
  }

  notify(queue: QueueId, lastSeq: bigint): void {
    const set = this.#listeners.get(queue);
    if (!set) return;
    for (const l of [...set]) {
      try {
        l(lastSeq);
      } catch {
        // A listener's failure must not affect the writer nor other listeners.
      }
    }
  }

  /**
   * Resolve once the queue's last sequence is > afterSeq. Subscribes before
   * reading the current value, so an append between the two is not missed.
   */
  waitFor(queue: QueueId, afterSeq: bigint, current: () => Promise<bigint>, signal?: AbortSignal): Promise<bigint> {
    if (this.#closed) return Promise.reject(new StoreClosedError());
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<bigint>((resolve, reject) => {
      let done = false;
      const finish = (f: () => void): void => {
        if (done) return;
        done = true;
        unsubscribe();
        signal?.removeEventListener("abort", onAbort);
        this.#closers.delete(onClose);
        f();
      };
      const onAbort = (): void => finish(() => reject(signal?.reason));
      const onClose = (err: Error): void => finish(() => reject(err));
      const unsubscribe = this.subscribe(queue, (last) => {
        if (last > afterSeq) finish(() => resolve(last));
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#closers.add(onClose);
      current().then(
        (last) => {
          if (last > afterSeq) finish(() => resolve(last));
        },
        (err: unknown) => finish(() => reject(err)),
      );
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new StoreClosedError();
    for (const c of [...this.#closers]) c(err);
    this.#listeners.clear();
  }
}
