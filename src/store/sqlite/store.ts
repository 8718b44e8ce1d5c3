// The embedded adapter: better-sqlite3 in one file, WAL journal, and
// synchronous=FULL by default so that an acknowledged write survives kill -9
// and power loss. Reads run on this thread's connection (better-sqlite3 is
// synchronous; they are short). Writes go to a second connection in a worker
// thread (writer-thread.ts), so the fsync of a commit does not stop the event
// loop; in-memory databases and `writer: "inline"` write on this thread.
//
// Group commit: a commit costs one WAL fsync, so `apply` calls are not
// written one by one. They are queued and written
// together in one BEGIN IMMEDIATE transaction with one fsync; each call's ops
// run in their own SAVEPOINT, so a call whose precondition fails rolls back
// alone and gets its own error while the others commit. Every promise settles
// only after the shared COMMIT returned (durable), and calls are applied in
// call order (`appliesInOrder`). The queue is written at the end of the
// current event-loop turn (setImmediate: no added latency): every apply made by
// this turn's I/O callbacks and their promise chains joins the group, and under
// load the calls made while one group commits (one group at a time) form the next. An optional
// collection window after a commit (`groupCommitWindowMs`, off by default: it
// delays sequential callers) trades latency for larger groups.
// BEGIN IMMEDIATE serializes with other processes sharing the file
// (busy_timeout makes writers wait).
//
// Wake-ups are in-process only: a second process writing the same file does
// not wake this one's waiters. Scale-out uses the MongoDB adapter.

import type Database from "better-sqlite3";
import { AppendNotifier, checkUint63, prefixedEntry } from "../common.js";
import {
  DuplicateKeyPackageError,
  EpochConflictError,
  GroupExistsError,
  StoreClosedError,
  StoreError,
  UnknownClientError,
  UnknownGroupError,
} from "../errors.js";
import type {
  AppendListener,
  AppliedWrite,
  ClientRecord,
  EpochLogEntry,
  HistoryEntry,
  LoadedGroup,
  PurgeResult,
  QueueTrim,
  QueueEntry,
  QueueId,
  QueueInfo,
  RateLimitResult,
  RateLimitRule,
  Store,
  StoreWrite,
  StoredKeyPackage,
  StoredProposal,
  Unsubscribe,
  WriteOp,
} from "../port.js";
import { payloadLength, type FeedMembership } from "../port.js";
import { migrate } from "./migrations.js";
import { big, bytes, keyPackageOf, logEntryOf, num, openConnection, prepare, translate, type Row, type Statements } from "./statements.js";
import { DuplicateBatch, GroupAborted, SqliteWriter, type ApplyOutcome } from "./writer.js";
import { WriterThread } from "./writer-thread.js";

export interface SqliteStoreOptions {
  /** Database file (its directory is created), or ':memory:' (tests only). */
  readonly path: string;
  /** FULL (default): durable on power loss. NORMAL in WAL: survives process crash, may lose the last commits on power loss. */
  readonly synchronous?: "FULL" | "NORMAL";
  /** How long a writer waits for another process's transaction (default 5000 ms). */
  readonly busyTimeoutMs?: number;
  /** Clock, for tests (default Date.now). */
  readonly now?: () => number;
  /**
   * Group commit: after a commit, collect further calls for up to this long (at most 3x the
   * last commit's duration) before the next one. Default 0: each event-loop turn's calls are
   * written at its end, with no added latency.
   */
  readonly groupCommitWindowMs?: number;
  /** Where writes run: "thread" (default for files: a worker thread) or "inline" (this thread; always for ':memory:'). */
  readonly writer?: "thread" | "inline";
}

/** The writing side, in a worker thread or inline. */
interface Writer {
  /** Rejects with GroupAborted when nothing of the group was applied. */
  applyGroup(batches: readonly (readonly WriteOp[])[], now: number): Promise<ApplyOutcome[]>;
  rateLimit(key: string, rule: RateLimitRule, now: number): Promise<RateLimitResult>;
  purgeExpired(now: number): Promise<PurgeResult>;
  trimQueues(prefix: string, trim: QueueTrim): Promise<number>;
  close(): Promise<void>;
}

function inlineWriter(w: SqliteWriter): Writer {
  const run = <T>(f: () => T): Promise<T> => {
    try {
      return Promise.resolve(f());
    } catch (err) {
      return Promise.reject(err);
    }
  };
  return {
    applyGroup: (batches, now) => run(() => w.applyGroup(batches, now)),
    rateLimit: (key, rule, now) => run(() => w.rateLimit(key, rule, now)),
    purgeExpired: (now) => run(() => w.purgeExpired(now)),
    trimQueues: (prefix, trim) => run(() => w.trimQueues(prefix, trim)),
    close: async () => undefined,
  };
}

/** Entry prefixes a reader keeps (one per group epoch and guest domain in use). */
const PREFIX_CACHE = 64;
/** Most `apply` calls written in one group commit (bounds one commit's size and time). */
const MAX_GROUP = 512;
/** One queued `apply` call of a group commit. */
interface PendingApply {
  readonly ops: readonly WriteOp[];
  readonly resolve: (r: AppliedWrite) => void;
  readonly reject: (err: unknown) => void;
}

export async function openSqliteStore(options: SqliteStoreOptions): Promise<SqliteStore> {
  return SqliteStore.open(options);
}

export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #notifier = new AppendNotifier();
  readonly #s: Statements;
  readonly #writer: Writer;
  #pending: PendingApply[] = [];
  #flushScheduled = false;
  /** A group is being written: the calls made meanwhile form the next one. */
  #writing = false;
  #onIdle: (() => void) | undefined;
  #commits = 0;
  #committedApplies = 0;
  readonly #maxWindowMs: number;
  /** performance.now() at the end of the last group commit, and how long it took. */
  #lastCommitEnd = Number.NEGATIVE_INFINITY;
  #lastCommitMs = 0;
  #closed = false;

  /** Calls are applied, and their promises settle, in call order. */
  readonly appliesInOrder = true;

  /** Told after every committed group commit: how many apply calls it carried and how long it took (metrics). */
  onGroupCommit: ((applies: number, ms: number) => void) | undefined;

  private constructor(db: Database.Database, writer: Writer, now: () => number, maxWindowMs: number) {
    this.#db = db;
    this.#writer = writer;
    this.#now = now;
    this.#maxWindowMs = maxWindowMs;
    this.#s = prepare(db);
  }

  static async open(options: SqliteStoreOptions): Promise<SqliteStore> {
    const db = openConnection(options);
    try {
      migrate(db);
      const inline = options.path === ":memory:" || options.writer === "inline";
      const writer = inline ? inlineWriter(new SqliteWriter(db)) : await WriterThread.start(options);
      return new SqliteStore(db, writer, options.now ?? Date.now, Math.max(0, options.groupCommitWindowMs ?? 0));
    } catch (err) {
      db.close();
      throw translate(err);
    }
  }

  /** Group commit statistics: transactions written by `apply` and the calls they carried. */
  get applyStats(): { readonly transactions: number; readonly applies: number } {
    return { transactions: this.#commits, applies: this.#committedApplies };
  }

  /** The underlying connection, for diagnostics and tests (pragmas, schema checks). */
  get database(): Database.Database {
    return this.#db;
  }

  // -------------------------------------------------------------------------
  // apply

  apply(batch: StoreWrite): Promise<AppliedWrite> {
    if (this.#closed) return Promise.reject(new StoreClosedError());
    return new Promise<AppliedWrite>((resolve, reject) => {
      this.#pending.push({ ops: batch.ops, resolve, reject });
      if (this.#flushScheduled) {
        if (this.#pending.length === MAX_GROUP) setImmediate(() => this.#flush()); // full: no need to wait
        return;
      }
      this.#flushScheduled = true;
      // Collect for a few commit durations after the previous commit (busy), else only
      // until the end of this turn (idle): its I/O callbacks and promise chains join.
      const window = Math.min(this.#maxWindowMs, 3 * this.#lastCommitMs);
      const wait = this.#lastCommitEnd + window - performance.now();
      if (wait >= 1) setTimeout(() => this.#flush(), wait);
      else setImmediate(() => this.#flush());
    });
  }

  /** Writes every queued apply: groups of up to MAX_GROUP calls, one transaction (one fsync) each, one after another. */
  #flush(): void {
    if (!this.#flushScheduled) return; // an early flush (full group, close) got here first
    this.#flushScheduled = false;
    if (this.#writing) return; // the group being written takes these next
    this.#writing = true;
    void (async () => {
      while (this.#pending.length > 0) {
        const items = this.#pending.length <= MAX_GROUP ? this.#pending : this.#pending.slice(0, MAX_GROUP);
        this.#pending = this.#pending.length <= MAX_GROUP ? [] : this.#pending.slice(MAX_GROUP);
        await this.#commitGroup(items);
      }
      this.#writing = false;
      this.#onIdle?.();
    })();
  }

  async #commitGroup(items: readonly PendingApply[]): Promise<void> {
    let outcomes: ApplyOutcome[];
    const started = performance.now();
    try {
      outcomes = await this.#writer.applyGroup(
        items.map((i) => i.ops),
        this.#now(),
      );
      this.#commits++;
      this.#committedApplies += items.length;
    } catch (err) {
      // BEGIN or COMMIT failed, or SQLite dropped the transaction: nothing of the group was applied.
      const e = translate(err instanceof GroupAborted ? err.original : err);
      for (const item of items) item.reject(e);
      return;
    }
    this.#lastCommitEnd = performance.now();
    this.#lastCommitMs = this.#lastCommitEnd - started;
    this.onGroupCommit?.(items.length, this.#lastCommitMs);
    // Committed (and fsynced): wake readers once per queue, then answer every caller in order.
    const last = new Map<QueueId, bigint>();
    for (const o of outcomes) if ("ok" in o) for (const [queue, seq] of o.ok.appended) last.set(queue, seq);
    for (const [queue, seq] of last) this.#notifier.notify(queue, seq);
    for (let i = 0; i < items.length; i++) {
      const o = outcomes[i]!;
      const item = items[i]!;
      if ("ok" in o) item.resolve(o.ok.result);
      else if (o.err instanceof DuplicateBatch) item.resolve({ duplicate: true, appended: [], keyPackages: [], epochs: [] });
      else item.reject(translate(o.err));
    }
  }

  // -------------------------------------------------------------------------
  // reads

  async loadGroup(groupId: string): Promise<LoadedGroup | undefined> {
    return this.#load(groupId);
  }

  async loadGroupAt(groupId: string, epoch: bigint): Promise<LoadedGroup | undefined> {
    return this.#load(groupId, checkUint63("epoch", epoch));
  }

  /** The newest snapshot at or before `at` (default: the current epoch) and the log up to it, in one read transaction. */
  async #load(groupId: string, at?: bigint): Promise<LoadedGroup | undefined> {
    return this.#run(() =>
      this.#db.transaction(() => {
        const s = this.#s;
        const g = s.getGroup.get(groupId) as Row | undefined;
        if (!g) return undefined;
        const epoch = at ?? big(g.epoch);
        if (epoch > big(g.epoch)) return undefined;
        const latest = s.getSnapshot.get(groupId) as Row;
        const snap = big(latest.epoch) <= epoch ? latest : (s.retainedAtOrBefore.get(groupId, epoch) as Row | undefined);
        if (!snap) return undefined;
        const snapEpoch = big(snap.epoch);
        const log = (s.readLogRange.all(groupId, snapEpoch, epoch) as Row[]).map(logEntryOf);
        if (at !== undefined && BigInt(log.length) !== epoch - snapEpoch) return undefined; // the log no longer reaches back
        return {
          groupId,
          epoch,
          snapshot: { epoch: snapEpoch, state: bytes(snap.state) },
          log,
          metadata: bytes(g.metadata),
          createdAt: num(g.created_at),
          updatedAt: num(g.updated_at),
        };
      })(),
    );
  }

  async groupEpoch(groupId: string): Promise<bigint | undefined> {
    return this.#run(() => {
      const row = this.#s.groupEpoch.get(groupId) as Row | undefined;
      return row ? big(row.epoch) : undefined;
    });
  }

  async readGroupLog(groupId: string, afterEpoch: bigint): Promise<readonly EpochLogEntry[] | undefined> {
    checkUint63("epoch", afterEpoch);
    return this.#run(() =>
      this.#db.transaction(() => {
        const g = this.#s.groupEpoch.get(groupId) as Row | undefined;
        if (!g) return undefined;
        const snap = this.#s.getSnapshotEpoch.get(groupId) as Row;
        // Entries up to the snapshot epoch were dropped: the log only covers afterEpoch >= snapshot epoch.
        if (afterEpoch < big(snap.epoch)) return undefined;
        return (this.#s.readLog.all(groupId, afterEpoch) as Row[]).map(logEntryOf);
      })(),
    );
  }

  async listGroups(opts?: { after?: string; limit?: number }): Promise<string[]> {
    return this.#run(() =>
      (this.#s.listGroups.all(opts?.after ?? null, opts?.after ?? null, opts?.limit ?? -1) as Row[]).map((r) => String(r.group_id)),
    );
  }

  async listProposals(groupId: string, epoch: bigint): Promise<StoredProposal[]> {
    checkUint63("epoch", epoch);
    return this.#run(() =>
      (this.#s.listProposals.all(groupId, epoch) as Row[]).map((r) => ({
        epoch: big(r.epoch),
        ref: bytes(r.ref),
        proposal: bytes(r.proposal),
        createdAt: num(r.created_at),
      })),
    );
  }

  async listHistory(groupId: string, now?: number): Promise<HistoryEntry[]> {
    const t = now ?? this.#now();
    return this.#run(() =>
      this.#db.transaction(() => (this.#s.listHistory.all(groupId, t) as Row[]).map((r) => this.#historyOf(r)))(),
    );
  }

  async historyForJoiner(groupId: string, keyPackageRef: Uint8Array, now?: number): Promise<HistoryEntry | undefined> {
    const t = now ?? this.#now();
    return this.#run(() =>
      this.#db.transaction(() => {
        const r = this.#s.historyForJoiner.get(groupId, keyPackageRef, t) as Row | undefined;
        return r ? this.#historyOf(r) : undefined;
      })(),
    );
  }

  #historyOf(r: Row): HistoryEntry {
    const joiners = (this.#s.historyJoiners.all(r.group_id, r.epoch) as Row[]).map((j) => bytes(j.kp_ref));
    return {
      groupId: String(r.group_id),
      epoch: big(r.epoch),
      ratchetTree: bytes(r.ratchet_tree),
      groupInfo: bytes(r.group_info),
      joiners,
      expiresAt: num(r.expires_at),
    };
  }

  async fanoutTokens(groupId: string): Promise<Map<string, Uint8Array>> {
    return this.#run(
      () => new Map((this.#s.listTokens.all(groupId) as Row[]).map((r) => [String(r.client_id), bytes(r.token)])),
    );
  }

  async fanoutToken(groupId: string, clientId: string): Promise<Uint8Array | undefined> {
    return this.#run(() => {
      const r = this.#s.getToken.get(groupId, clientId) as Row | undefined;
      return r ? bytes(r.token) : undefined;
    });
  }

  async getClient(clientId: string): Promise<ClientRecord | undefined> {
    return this.#run(() => {
      const r = this.#s.getClient.get(clientId) as Row | undefined;
      if (!r) return undefined;
      return {
        clientId,
        signaturePublicKey: bytes(r.sig_key),
        authData: bytes(r.auth_data),
        createdAt: num(r.created_at),
        updatedAt: num(r.updated_at),
      };
    });
  }

  async consumeKeyPackage(clientId: string, ciphersuite?: number): Promise<StoredKeyPackage | undefined> {
    const op: WriteOp = ciphersuite === undefined ? { kind: "consumeKeyPackage", clientId } : { kind: "consumeKeyPackage", clientId, ciphersuite };
    const r = await this.apply({ ops: [op] });
    return r.keyPackages[0];
  }

  async countKeyPackages(clientId: string, ciphersuite?: number, now?: number): Promise<number> {
    const suite = ciphersuite ?? null;
    return this.#run(() => num((this.#s.countKeyPackages.get(clientId, suite, suite, now ?? this.#now()) as Row).n));
  }

  // -------------------------------------------------------------------------
  // queues

  async read(queue: QueueId, afterSeq: bigint, limit: number, maxBytes?: number): Promise<QueueEntry[]> {
    checkUint63("seq", afterSeq);
    const n = Math.max(0, Math.floor(limit));
    return this.#run(() => {
      const out: QueueEntry[] = [];
      let total = 0;
      // Iterate (not .all()): at most one payload past the byte bound is read, and dropped at once.
      for (const r of this.#s.readQueue.iterate(queue, afterSeq, n) as IterableIterator<Row>) {
        const entry: QueueEntry =
          r.prefix_id == null
            ? { seq: big(r.seq), payload: bytes(r.payload), enqueuedAt: num(r.enqueued_at) }
            : prefixedEntry(big(r.seq), num(r.enqueued_at), String(r.prefix_id), this.#prefix(big(r.prefix_id)), bytes(r.payload));
        const size = payloadLength(entry);
        if (maxBytes !== undefined && out.length > 0 && total + size > maxBytes) break;
        total += size;
        out.push(entry);
      }
      return out;
    });
  }

  /** Prefixes by id (ids are never reused and a prefix never changes): a hub's stream reads each once. */
  readonly #prefixes = new Map<bigint, Buffer>();

  #prefix(id: bigint): Buffer {
    let prefix = this.#prefixes.get(id);
    if (prefix === undefined) {
      const row = this.#s.prefixData.get(id) as Row | undefined;
      if (row === undefined) throw new StoreError(`queue entry names entry prefix ${id}, which is not stored`);
      prefix = row.data as Buffer;
      if (this.#prefixes.size >= PREFIX_CACHE) this.#prefixes.delete(this.#prefixes.keys().next().value!);
      this.#prefixes.set(id, prefix);
    }
    return prefix;
  }

  /** Joins the group commit: acknowledgements (a guest DS's, a client's) share the other writes' fsync. */
  async ack(queue: QueueId, uptoSeq: bigint): Promise<number> {
    checkUint63("seq", uptoSeq);
    return (await this.apply({ ops: [{ kind: "ack", queue, uptoSeq }] })).acked ?? 0;
  }

  async queueInfo(queue: QueueId): Promise<QueueInfo> {
    return this.#run(() => this.#queueInfo(queue));
  }

  #queueInfo(queue: QueueId): QueueInfo {
    const head = this.#s.queueHead.get(queue) as Row | undefined;
    const stats = this.#s.queueStats.get(queue) as Row;
    return {
      lastSeq: head ? big(head.last_seq) : 0n,
      firstSeq: stats.first == null ? undefined : big(stats.first),
      length: num(stats.n),
    };
  }

  async feedMemberships(clientId: string): Promise<FeedMembership[]> {
    return this.#run(() =>
      (this.#s.feedMembershipsOfClient.all(clientId) as Row[]).map((r) => ({
        groupId: String(r.group_id),
        head: big(r.head),
        cursor: big(r.cursor),
        ...(r.until == null ? {} : { until: big(r.until) }),
      })),
    );
  }

  async feedMembers(groupId: string): Promise<string[]> {
    return this.#run(() => (this.#s.feedMembersOfGroup.all(groupId) as Row[]).map((r) => String(r.client_id)));
  }

  async feedSet(groupId: string): Promise<string | undefined> {
    return this.#run(() => {
      const r = this.#s.getFeedSet.get(groupId) as Row | undefined;
      return r === undefined ? undefined : String(r.set_id);
    });
  }

  async clientsVersion(): Promise<bigint> {
    return this.#run(() => {
      const r = this.#s.clientsVersion.get() as Row | undefined;
      return r === undefined ? 0n : big(r.value);
    });
  }

  subscribe(queue: QueueId, listener: AppendListener): Unsubscribe {
    if (this.#closed) throw new StoreClosedError();
    return this.#notifier.subscribe(queue, listener);
  }

  waitForAppend(queue: QueueId, afterSeq: bigint, signal?: AbortSignal): Promise<bigint> {
    return this.#notifier.waitFor(queue, afterSeq, async () => (await this.queueInfo(queue)).lastSeq, signal);
  }

  // -------------------------------------------------------------------------
  // at-most-once, rate limits, maintenance

  async isProcessed(source: string, sequence: bigint): Promise<boolean> {
    return this.#run(() => {
      const row = this.#s.getProcessed.get(source) as Row | undefined;
      return row !== undefined && sequence <= big(row.last_seq);
    });
  }

  async rateLimit(key: string, rule: RateLimitRule, now?: number): Promise<RateLimitResult> {
    const t = now ?? this.#now();
    return this.#write(() => this.#writer.rateLimit(key, rule, t));
  }

  async purgeExpired(now?: number): Promise<PurgeResult> {
    const t = now ?? this.#now();
    return this.#write(() => this.#writer.purgeExpired(t));
  }

  async trimQueues(prefix: string, trim: QueueTrim): Promise<number> {
    return this.#write(() => this.#writer.trimQueues(prefix, trim));
  }

  async ping(): Promise<void> {
    this.#run(() => this.#s.ping.get());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Calls made before close() are written (or fail) before the connections go.
    this.#flushScheduled = true;
    this.#flush();
    while (this.#writing) await new Promise<void>((r) => (this.#onIdle = r));
    this.#notifier.close();
    await this.#writer.close();
    this.#db.close();
  }

  async #write<T>(f: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreClosedError();
    try {
      return await f();
    } catch (err) {
      throw translate(err);
    }
  }

  #run<T>(f: () => T): T {
    if (this.#closed) throw new StoreClosedError();
    try {
      return f();
    } catch (err) {
      throw translate(err);
    }
  }
}
