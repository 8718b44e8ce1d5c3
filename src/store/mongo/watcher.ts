// Wake-ups from other instances: a change stream on the queue counters, with
// polling of the watched counters while the stream is down.
//
// - The stream is opened when the store opens, at an operationTime taken from
//   the server before the store is handed out (startAtOperationTime): a commit
//   by another instance right after open is delivered even though the
//   stream's aggregate goes out a moment later.
// - If the stream fails or ends (a non-resumable error, the collection
//   dropped), polling starts at once (its first round notifies every watched
//   queue whose counter it has not seen: the catch-up) and the stream is
//   re-opened with a growing delay. Once the new stream has answered, one
//   last poll covers the gap before its start point, and polling stops.
// - `changeStreams: false`: polling only.
// Own writes are never notified from here (wakeups.ts): the store notifies
// its listeners itself after each commit.

import { BSON, type ChangeStream, type Collection, type Db, type MongoClient, type Timestamp } from "mongodb";
import type { AppendNotifier } from "../common.js";
import type { Doc } from "./schema.js";
import { StampTracker, wakeupOf } from "./wakeups.js";

export interface WatcherOptions {
  readonly client: MongoClient;
  readonly db: Db;
  readonly queues: Collection<Doc>;
  readonly notifier: AppendNotifier;
  readonly instance: string;
  readonly changeStreams: boolean;
  readonly pollMs: number;
  /** First delay before re-opening a failed stream (doubles up to 30 s). */
  readonly restartMs: number;
}

const PIPELINE = [{ $match: { operationType: { $in: ["insert", "update", "replace"] } } }];
/** How long one getMore of the stream waits for events: also how often an idle stream reports itself healthy. */
const MAX_AWAIT_MS = 1000;
const MAX_RESTART_MS = 30_000;

export class Watcher {
  readonly #o: WatcherOptions;
  readonly #tracker = new StampTracker();
  #stream: ChangeStream | undefined;
  #poller: NodeJS.Timeout | undefined;
  /** The poll round in flight, if any. */
  #round: Promise<void> | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartDelay: number;
  #closed = false;
  /** Counts stream (re)starts and fallbacks, for tests and diagnostics. */
  readonly stats = { streamsOpened: 0, fallbacks: 0 };

  constructor(options: WatcherOptions) {
    this.#o = options;
    this.#restartDelay = options.restartMs;
  }

  /** True while the stream is down (or disabled) and counters are polled. */
  get polling(): boolean {
    return this.#poller !== undefined;
  }

  get streaming(): boolean {
    return this.#stream !== undefined;
  }

  async start(): Promise<void> {
    if (!this.#o.changeStreams) return this.#startPolling();
    await this.#openStream();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#poller) clearInterval(this.#poller);
    this.#poller = undefined;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    const s = this.#stream;
    this.#stream = undefined;
    await s?.close().catch(() => undefined);
  }

  async #openStream(): Promise<void> {
    if (this.#closed) return;
    let stream: ChangeStream;
    let at: Timestamp | undefined;
    try {
      at = await this.#operationTime();
      stream = this.#o.queues.watch(PIPELINE, { maxAwaitTimeMS: MAX_AWAIT_MS, ...(at ? { startAtOperationTime: at } : {}) });
    } catch {
      return this.#fallBack();
    }
    this.#stream = stream;
    this.stats.streamsOpened++;
    let answered!: () => void;
    const firstResponse = new Promise<void>((r) => (answered = r));
    void this.#run(stream, answered);
    // Without a start time the stream starts when its aggregate is answered: wait for that.
    if (!at) await firstResponse;
  }

  /**
   * The server's operation time now: the stream starts there, so nothing
   * committed after it is missed. Replica set members put it in every reply;
   * `hello`'s last write is the fallback.
   */
  async #operationTime(): Promise<Timestamp | undefined> {
    const session = this.#o.client.startSession();
    try {
      await this.#o.db.command({ ping: 1 }, { session });
      if (session.operationTime) return session.operationTime;
    } finally {
      await session.endSession().catch(() => undefined);
    }
    const hello = await this.#o.db.command({ hello: 1 });
    const ts: unknown = hello.lastWrite?.opTime?.ts;
    return ts instanceof BSON.Timestamp ? ts : undefined;
  }

  async #run(stream: ChangeStream, answered: () => void): Promise<void> {
    let healthy = false;
    try {
      while (!this.#closed && this.#stream === stream && !stream.closed) {
        const started = Date.now();
        // tryNext: an event, or null after an empty getMore; either way the stream works.
        const ev = await stream.tryNext();
        if (!healthy) {
          healthy = true;
          answered();
          await this.#streamHealthy();
        }
        if (ev) this.#onEvent(ev);
        else if (Date.now() - started < 50) await sleep(200); // never spin on a stream that answers at once
      }
    } catch {
      // Non-resumable error (the driver resumes the others itself) or closed by us.
    }
    answered();
    if (this.#closed || this.#stream !== stream) return;
    this.#stream = undefined;
    await stream.close().catch(() => undefined);
    this.#fallBack();
  }

  async #streamHealthy(): Promise<void> {
    this.#restartDelay = this.#o.restartMs;
    if (!this.#poller) return;
    // Anything before the new stream's start point is seen by a round that starts now.
    await this.#round;
    await this.#poll();
    if (this.#stream !== undefined && this.#poller) {
      clearInterval(this.#poller);
      this.#poller = undefined;
    }
  }

  #onEvent(ev: Doc): void {
    const w = wakeupOf(ev, this.#o.instance);
    if (!w) return;
    if (w.lastSeq !== undefined) return this.#o.notifier.notify(w.queue, w.lastSeq);
    // A touch (no sequence moved): read the counter, if anyone here listens.
    if (!this.#o.notifier.watchedQueues().includes(w.queue)) return;
    void this.#o.queues.findOne({ _id: w.queue }, { projection: { lastSeq: 1 } }).then(
      (d) => {
        if (d) this.#o.notifier.notify(w.queue, toBig(d.lastSeq));
      },
      () => undefined,
    );
  }

  #fallBack(): void {
    if (this.#closed) return;
    this.stats.fallbacks++;
    this.#startPolling();
    if (this.#restartTimer) return;
    const delay = this.#restartDelay;
    this.#restartDelay = Math.min(MAX_RESTART_MS, this.#restartDelay * 2);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      void this.#openStream();
    }, delay);
    this.#restartTimer.unref();
  }

  #startPolling(): void {
    if (this.#closed || this.#poller) return;
    this.#poller = setInterval(() => void this.#poll(), this.#o.pollMs);
    this.#poller.unref();
    void this.#poll();
  }

  /** One round; a round already in flight is joined. */
  #poll(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#round ??= this.#pollRound().finally(() => (this.#round = undefined));
    return this.#round;
  }

  async #pollRound(): Promise<void> {
    try {
      const watched = this.#o.notifier.watchedQueues();
      this.#tracker.retain(new Set(watched));
      if (watched.length === 0) return;
      const docs = await this.#o.queues.find({ _id: { $in: watched } }, { projection: { lastSeq: 1, w: 1 } }).toArray();
      const seen = new Set<string>();
      for (const d of docs) {
        const id = String(d._id);
        seen.add(id);
        if (this.#tracker.observe(id, d.w, d.lastSeq, this.#o.instance)) this.#o.notifier.notify(id, toBig(d.lastSeq));
      }
      for (const q of watched) if (!seen.has(q)) this.#tracker.forget(q);
    } catch {
      // The next round retries; waiters are not failed by a transient outage.
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
const toBig = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number));
