// Which queue-counter changes wake which listeners. Pure: unit-tested with
// change events as the server sends them.
//
// Every write to a queue counter document {_id: queue, lastSeq, w} sets `w`
// to a stamp unique to that write, "<instance id>:<n>". So:
// - every such write really changes the document (a change event, a write
//   conflict with concurrent writers), even one that moves no sequence
//   (joinFeed tells the client's readers with it);
// - an instance ignores change events of its own writes: it has notified its
//   listeners itself right after the commit, and the stream would repeat them
//   a few ms later, sometimes with a lower value (each op of a transaction is
//   one event: an upsert's insert carries lastSeq 1 after 2 was notified);
// - polling compares stamps, not sequences, so it sees touches too, and
//   skips this instance's own stamps for the same reason as the stream.

import type { Document } from "mongodb";

export const stamp = (instance: string, n: number): string => `${instance}:${n}`;

const isOwn = (w: unknown, instance: string): boolean => typeof w === "string" && w.startsWith(`${instance}:`);

export interface Wakeup {
  readonly queue: string;
  /** The queue's new last sequence; undefined when the event does not carry it (a touch: read the counter). */
  readonly lastSeq: bigint | undefined;
}

const toBig = (v: unknown): bigint | undefined => {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isSafeInteger(v)) return BigInt(v);
  return undefined;
};

/** The wake-up a change event of the `queues` collection means for this instance, if any. */
export function wakeupOf(event: Document, instance: string): Wakeup | undefined {
  const id: unknown = event.documentKey?._id;
  if (typeof id !== "string") return undefined;
  switch (event.operationType) {
    case "insert":
    case "replace": {
      const doc = event.fullDocument as Document | undefined;
      if (!doc || isOwn(doc.w, instance)) return undefined;
      return { queue: id, lastSeq: toBig(doc.lastSeq) ?? 0n };
    }
    case "update": {
      const fields = event.updateDescription?.updatedFields as Document | undefined;
      if (!fields || isOwn(fields.w, instance)) return undefined;
      return { queue: id, lastSeq: toBig(fields.lastSeq) };
    }
    default:
      return undefined; // delete (deleteQueue), drop, invalidate: no listener waits for those
  }
}

/**
 * For polling: the last stamp seen per watched queue. A polled counter with
 * another stamp is news, unless the stamp is this instance's own (its
 * listeners were notified after that commit). Only watched queues are kept
 * (pruned on every poll).
 */
export class StampTracker {
  readonly #known = new Map<string, string>();

  /** Whether a polled counter is news; records it. A counter without a stamp (written before stamps existed) counts by its sequence. */
  observe(queue: string, w: unknown, lastSeq: unknown, instance: string): boolean {
    const key = typeof w === "string" ? w : `seq:${String(lastSeq)}`;
    if (this.#known.get(queue) === key) return false;
    this.#known.set(queue, key);
    return !isOwn(w, instance);
  }

  /** Forget queues nobody watches any more. */
  retain(watched: ReadonlySet<string>): void {
    for (const q of this.#known.keys()) if (!watched.has(q)) this.#known.delete(q);
  }

  /** The queue's counter is gone (deleted): a new one is news whatever its stamp. */
  forget(queue: string): void {
    this.#known.delete(queue);
  }

  get size(): number {
    return this.#known.size;
  }
}
