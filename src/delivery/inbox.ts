// A local client's inbox: its own queue, fed from the feeds of its groups.
// A message to a group is one feed entry at send time (src/ds/fanout.ts);
// it becomes an entry of each member's queue (with that queue's sequence
// number, acknowledged as before) when the member's Receive stream pulls it,
// so offline members cost nothing until they come back.
import type { FeedMembership, Store, Unsubscribe } from "../store/port.js";
import { clientQueue, groupFeed } from "../store/port.js";

/** Re-reads the memberships this often even without a wake-up (a safety net; wake-ups normally come first). */
const RECHECK_MS = 30_000;

const pending = (m: FeedMembership): boolean => (m.until ?? m.head) > m.cursor && m.head > m.cursor;

export class ClientInbox {
  readonly queue: string;
  readonly #feeds = new Map<string, Unsubscribe>();
  #unsubscribeQueue: Unsubscribe | undefined;
  /** Something was appended (or a membership changed) since the last refill. */
  #dirty = true;
  #wake: (() => void) | undefined;

  constructor(
    private readonly store: Store,
    private readonly clientId: string,
  ) {
    this.queue = clientQueue(clientId);
  }

  /** Listen before reading, so that no append between a read and a wait is missed. */
  open(): void {
    // Any notice of the client's queue counts: joinFeed notifies it without an append.
    this.#unsubscribeQueue = this.store.subscribe(this.queue, () => this.#poke());
  }

  close(): void {
    this.#unsubscribeQueue?.();
    for (const u of this.#feeds.values()) u();
    this.#feeds.clear();
    this.#wake?.();
  }

  /** Pull whatever the client's feeds hold for it into its queue; true when something came. */
  readonly refill = async (): Promise<boolean> => {
    if (!this.#dirty) return false;
    this.#dirty = false;
    // Each pull moves the cursors; a pull of only entries not for this client (its own messages) copies nothing.
    for (let round = 0; round < 8; round++) {
      const memberships = await this.store.feedMemberships(this.clientId);
      this.#follow(memberships);
      if (!memberships.some(pending)) return false;
      const r = await this.store.apply({ ops: [{ kind: "pullFeeds", clientId: this.clientId }] });
      if ((r.pulled ?? 0) > 0) return true;
    }
    this.#dirty = true;
    return false;
  };

  readonly wait = (_afterSeq: bigint, signal: AbortSignal): Promise<bigint | undefined> => {
    if (this.#dirty) return Promise.resolve(undefined);
    return new Promise<bigint | undefined>((resolve, reject) => {
      const timer = setTimeout(() => this.#poke(), RECHECK_MS);
      const onAbort = () => done(() => reject(signal.reason));
      const done = (f: () => void) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.#wake = undefined;
        f();
      };
      this.#wake = () => done(() => resolve(undefined));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  };

  #poke(): void {
    this.#dirty = true;
    this.#wake?.();
  }

  /** Listen to the feeds of the current memberships (and stop listening to the others). */
  #follow(memberships: readonly FeedMembership[]): void {
    const now = new Set(memberships.map((m) => m.groupId));
    for (const [groupId, u] of this.#feeds) if (!now.has(groupId)) (u(), this.#feeds.delete(groupId));
    let added = false;
    for (const groupId of now) {
      if (this.#feeds.has(groupId)) continue;
      this.#feeds.set(groupId, this.store.subscribe(groupFeed(groupId), () => this.#poke()));
      added = true;
    }
    // An append to a new feed between reading its head and listening to it would go unnoticed: look once more.
    if (added) this.#dirty = true;
  }
}
