// The embedded adapter: better-sqlite3 in one file, WAL journal, and
// synchronous=FULL by default so that an acknowledged write survives kill -9
// and power loss. better-sqlite3 is synchronous: each port call runs to
// completion on the event loop and is wrapped in a Promise.
//
// Group commit: a commit costs one WAL fsync, which blocks the event loop, so
// `apply` calls are not written one by one. They are queued and written
// together in one BEGIN IMMEDIATE transaction with one fsync; each call's ops
// run in their own SAVEPOINT, so a call whose precondition fails rolls back
// alone and gets its own error while the others commit. Every promise settles
// only after the shared COMMIT returned (durable), and calls are applied in
// call order (`appliesInOrder`). The queue is written at the end of the
// current event-loop turn (setImmediate: no added latency): every apply made by
// this turn's I/O callbacks and their promise chains joins the group, and under
// load the calls made while one group commits form the next. An optional
// collection window after a commit (`groupCommitWindowMs`, off by default: it
// delays sequential callers) trades latency for larger groups.
// BEGIN IMMEDIATE serializes with other processes sharing the file
// (busy_timeout makes writers wait).
//
// Wake-ups are in-process only: a second process writing the same file does
// not wake this one's waiters. Scale-out uses the MongoDB adapter.

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { AppendNotifier, checkUint63, plainBytes, rateWindow } from "../common.js";
import {
  DuplicateKeyPackageError,
  EpochConflictError,
  GroupExistsError,
  StoreClosedError,
  StoreError,
  StoreUnavailableError,
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
import { clientQueue, DEFAULT_FEED_PULL_LIMIT, groupFeed, isGroupFeed, type FeedMembership } from "../port.js";
import { migrate } from "./migrations.js";

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
}

type Row = Record<string, unknown>;
const num = (v: unknown): number => Number(v as bigint);
const big = (v: unknown): bigint => v as bigint;
const bytes = (v: unknown): Uint8Array => plainBytes(v as Buffer | null);

/** Thrown inside a transaction to roll a duplicate batch back; never escapes. */
class DuplicateBatch extends Error {}

/** Most `apply` calls written in one group commit (bounds how long one commit holds the event loop). */
const MAX_GROUP = 512;
/** One queued `apply` call of a group commit. */
interface PendingApply {
  readonly ops: readonly WriteOp[];
  readonly resolve: (r: AppliedWrite) => void;
  readonly reject: (err: unknown) => void;
}

type ApplyOutcome = { readonly ok: { result: AppliedWrite; appended: Map<QueueId, bigint> } } | { readonly err: unknown };

/** SQLite rolled the whole transaction back (I/O error, disk full, ...): the group fails as a whole. */
class GroupAborted extends Error {
  constructor(readonly original: unknown) {
    super("group commit aborted");
  }
}

// SQLite result codes that mean "the database cannot serve now", not "your request is wrong".
const UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|READONLY|CORRUPT|NOTADB|PROTOCOL|NOMEM)/;

function translate(err: unknown): unknown {
  if (err instanceof StoreError) return err;
  if (err instanceof Database.SqliteError && UNAVAILABLE.test(err.code)) {
    return new StoreUnavailableError(`sqlite: ${err.message}`, { cause: err });
  }
  if (err instanceof TypeError && /database connection is not open/.test(err.message)) return new StoreClosedError();
  return err;
}

export async function openSqliteStore(options: SqliteStoreOptions): Promise<SqliteStore> {
  return SqliteStore.open(options);
}

export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #notifier = new AppendNotifier();
  readonly #s: ReturnType<typeof prepare>;
  readonly #groupTx: (group: readonly PendingApply[]) => ApplyOutcome[];
  #pending: PendingApply[] = [];
  #flushScheduled = false;
  #commits = 0;
  #committedApplies = 0;
  readonly #maxWindowMs: number;
  /** performance.now() at the end of the last group commit, and how long it took. */
  #lastCommitEnd = Number.NEGATIVE_INFINITY;
  #lastCommitMs = 0;
  #closed = false;

  /** Calls are applied, and their promises settle, in call order. */
  readonly appliesInOrder = true;

  private constructor(db: Database.Database, now: () => number, maxWindowMs: number) {
    this.#db = db;
    this.#now = now;
    this.#maxWindowMs = maxWindowMs;
    this.#s = prepare(db);
    // Inside the group's transaction better-sqlite3 runs a nested transaction as a SAVEPOINT:
    // a throw rolls back to it (and releases it) and rethrows.
    const one = db.transaction((ops: readonly WriteOp[]) => this.#applyOps(ops));
    const group = db.transaction((items: readonly PendingApply[]): ApplyOutcome[] =>
      items.map((item) => {
        try {
          return { ok: one(item.ops) };
        } catch (err) {
          // Some errors (SQLITE_FULL, IOERR, ...) make SQLite roll the whole transaction back.
          if (!db.inTransaction) throw new GroupAborted(err);
          return { err };
        }
      }),
    );
    // IMMEDIATE: take the write lock at BEGIN, so concurrent writers queue on busy_timeout instead of deadlocking on upgrade.
    this.#groupTx = (items) => group.immediate(items);
  }

  static open(options: SqliteStoreOptions): SqliteStore {
    const memory = options.path === ":memory:";
    if (!memory) mkdirSync(dirname(options.path), { recursive: true });
    let db: Database.Database | undefined;
    try {
      db = new Database(options.path);
      db.defaultSafeIntegers(true);
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`);
      if (!memory) {
        const mode = String(db.pragma("journal_mode = WAL", { simple: true }));
        if (mode.toLowerCase() !== "wal") throw new StoreUnavailableError(`sqlite: cannot enable WAL (journal_mode=${mode})`);
      }
      db.pragma(`synchronous = ${options.synchronous === "NORMAL" ? "NORMAL" : "FULL"}`);
      // 64 MiB page cache (default 2 MiB): queue and group indexes stay in memory instead of
      // being re-read through the OS on every insert.
      db.pragma("cache_size = -65536");
      // Group commit runs each apply in a SAVEPOINT: its sub-journal (copies of pages the
      // group already changed) stays in memory instead of a temp file.
      db.pragma("temp_store = MEMORY");
      migrate(db);
      return new SqliteStore(db, options.now ?? Date.now, Math.max(0, options.groupCommitWindowMs ?? 0));
    } catch (err) {
      db?.close();
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

  /** Writes every queued apply: groups of up to MAX_GROUP calls, one transaction (one fsync) each. */
  #flush(): void {
    if (!this.#flushScheduled) return; // an early flush (full group, close) got here first
    this.#flushScheduled = false;
    while (this.#pending.length > 0) {
      const items = this.#pending.length <= MAX_GROUP ? this.#pending : this.#pending.slice(0, MAX_GROUP);
      this.#pending = this.#pending.length <= MAX_GROUP ? [] : this.#pending.slice(MAX_GROUP);
      this.#commitGroup(items);
    }
  }

  #commitGroup(items: readonly PendingApply[]): void {
    let outcomes: ApplyOutcome[];
    const started = performance.now();
    try {
      if (this.#closed) throw new StoreClosedError();
      outcomes = this.#groupTx(items);
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

  #applyOps(ops: readonly WriteOp[]): { result: AppliedWrite; appended: Map<QueueId, bigint> } {
    const s = this.#s;
    const now = this.#now();
    const appended: { queue: QueueId; seq: bigint }[] = [];
    const keyPackages: (StoredKeyPackage | undefined)[] = [];
    const epochs: { groupId: string; epoch: bigint }[] = [];
    let pulled = 0;
    const lastByQueue = new Map<QueueId, bigint>();
    // Payloads (by identity) appended more than once in this batch are stored once.
    const sharedPayloads = sharedAppendPayloads(ops);

    const requireEpoch = (groupId: string, expected?: bigint): bigint => {
      const row = s.groupEpoch.get(groupId) as Row | undefined;
      if (!row) throw new UnknownGroupError(groupId);
      const current = big(row.epoch);
      if (expected !== undefined && current !== checkUint63("expected epoch", expected)) {
        throw new EpochConflictError(groupId, expected, current);
      }
      return current;
    };

    for (const op of ops) {
      switch (op.kind) {
        case "createGroup": {
          checkUint63("epoch", op.epoch);
          if (s.groupEpoch.get(op.groupId)) throw new GroupExistsError(op.groupId);
          s.insertGroup.run(op.groupId, op.epoch, op.metadata ?? null, now, now);
          s.upsertSnapshot.run(op.groupId, op.epoch, op.snapshot);
          break;
        }
        case "advanceGroup": {
          const current = requireEpoch(op.groupId, op.expectedEpoch);
          const next = checkUint63("epoch", current + 1n);
          s.setEpoch.run(next, op.metadata ?? null, now, op.groupId);
          s.insertLog.run(op.groupId, next, op.logEntry, now);
          if (op.snapshot) this.#replaceSnapshot(op.groupId, next, op.snapshot);
          s.clearOldProposals.run(op.groupId, next);
          epochs.push({ groupId: op.groupId, epoch: next });
          break;
        }
        case "snapshotGroup": {
          requireEpoch(op.groupId, op.epoch);
          this.#replaceSnapshot(op.groupId, op.epoch, op.snapshot);
          break;
        }
        case "setGroupMetadata": {
          requireEpoch(op.groupId, op.expectedEpoch);
          s.setMetadata.run(op.metadata, now, op.groupId);
          break;
        }
        case "checkEpoch":
          requireEpoch(op.groupId, op.epoch);
          break;
        case "deleteGroup": {
          requireEpoch(op.groupId, op.expectedEpoch);
          for (const del of s.deleteGroupAll) del.run(op.groupId);
          break;
        }
        case "addProposal": {
          requireEpoch(op.groupId);
          s.insertProposal.run(op.groupId, checkUint63("epoch", op.epoch), op.ref, op.proposal);
          break;
        }
        case "removeProposal":
          s.deleteProposal.run(op.groupId, op.ref);
          break;
        case "addHistory": {
          requireEpoch(op.groupId);
          checkUint63("epoch", op.epoch);
          s.upsertHistory.run(op.groupId, op.epoch, op.ratchetTree ?? new Uint8Array(), op.groupInfo ?? null, op.expiresAt);
          s.deleteHistoryJoinersOfEpoch.run(op.groupId, op.epoch);
          for (const ref of op.joiners) s.insertHistoryJoiner.run(op.groupId, op.epoch, ref);
          break;
        }
        case "removeHistoryJoiner": {
          if (op.epoch === undefined) s.deleteHistoryJoiner.run(op.groupId, op.keyPackageRef);
          else s.deleteHistoryJoinerAt.run(op.groupId, op.keyPackageRef, op.epoch);
          s.deleteEmptyHistory.run(op.groupId);
          break;
        }
        case "setFanoutToken":
          requireEpoch(op.groupId);
          s.upsertToken.run(op.groupId, op.clientId, op.token);
          break;
        case "removeFanoutToken":
          s.deleteToken.run(op.groupId, op.clientId);
          break;
        case "putClient":
          s.upsertClient.run(op.clientId, op.signaturePublicKey, op.authData ?? null, now, now);
          break;
        case "removeClient":
          s.deleteClient.run(op.clientId);
          s.deleteKeyPackagesOfClient.run(op.clientId);
          break;
        case "publishKeyPackages": {
          if (!s.getClient.get(op.clientId)) throw new UnknownClientError(op.clientId);
          for (const kp of op.keyPackages) {
            if (s.keyPackageByRef.get(kp.ref)) throw new DuplicateKeyPackageError(kp.ref);
            s.insertKeyPackage.run(op.clientId, kp.ciphersuite, kp.ref, kp.keyPackage, 0, kp.expiresAt ?? null, now);
          }
          if (op.lastResort) {
            const kp = op.lastResort;
            s.deleteLastResort.run(op.clientId, kp.ciphersuite);
            if (s.keyPackageByRef.get(kp.ref)) throw new DuplicateKeyPackageError(kp.ref);
            s.insertKeyPackage.run(op.clientId, kp.ciphersuite, kp.ref, kp.keyPackage, 1, kp.expiresAt ?? null, now);
          }
          break;
        }
        case "consumeKeyPackage":
          keyPackages.push(this.#consume(op.clientId, op.ciphersuite, now));
          break;
        case "deleteKeyPackages":
          if (op.refs) for (const ref of op.refs) s.deleteKeyPackageRef.run(op.clientId, ref);
          else s.deleteKeyPackagesOfClient.run(op.clientId);
          break;
        case "append": {
          const row = s.bumpQueue.get(op.queue) as Row;
          const seq = big(row.last_seq);
          const shared = sharedPayloads.get(op.payload);
          if (isGroupFeed(op.queue)) {
            // Feed payloads always live in queue_payloads: members' copies point at them.
            const id = shared?.id ?? big((s.insertPayload.get(op.payload, shared?.refs ?? 1) as Row).id);
            if (shared !== undefined) shared.id = id;
            s.insertFeedEntry.run(op.queue, seq, id, now, op.except !== undefined && op.except.length > 0 ? op.except.join("\n") : null);
          } else if (shared === undefined) s.insertEntry.run(op.queue, seq, op.payload, now);
          else {
            if (shared.id === undefined) shared.id = big((s.insertPayload.get(op.payload, shared.refs) as Row).id);
            s.insertSharedEntry.run(op.queue, seq, shared.id, now);
          }
          appended.push({ queue: op.queue, seq });
          lastByQueue.set(op.queue, seq);
          break;
        }
        case "joinFeed": {
          const member = s.getFeedMember.get(op.clientId, op.groupId) as Row | undefined;
          if (member !== undefined && member.until == null) break; // already receiving it
          // Left earlier with entries still pending: they go to its queue before the new membership starts.
          if (member !== undefined) pulled += this.#pullFeed(op.clientId, member, Number.MAX_SAFE_INTEGER, now, lastByQueue);
          s.upsertFeedMember.run(op.clientId, op.groupId, this.#feedHead(op.groupId));
          // The client's readers hear of it (without an append) and start following the feed.
          const own = s.queueHead.get(clientQueue(op.clientId)) as Row | undefined;
          lastByQueue.set(clientQueue(op.clientId), own ? big(own.last_seq) : 0n);
          break;
        }
        case "leaveFeed": {
          const head = this.#feedHead(op.groupId);
          if (op.clientId !== undefined) s.leaveFeed.run(head, op.clientId, op.groupId);
          else s.leaveFeedAll.run(head, op.groupId);
          s.dropFinishedFeedMembers.run(op.groupId);
          this.#trimFeed(op.groupId);
          break;
        }
        case "pullFeeds": {
          let budget = Math.max(1, Math.floor(op.limit ?? DEFAULT_FEED_PULL_LIMIT));
          for (const member of s.feedMembersOfClient.all(op.clientId) as Row[]) {
            if (budget <= 0) break;
            const n = this.#pullFeed(op.clientId, member, budget, now, lastByQueue);
            pulled += n;
            budget -= n;
          }
          break;
        }
        case "ack":
          s.ackQueue.run(op.queue, checkUint63("seq", op.uptoSeq));
          break;
        case "deleteQueue":
          s.deleteQueueEntries.run(op.queue);
          s.deleteQueue.run(op.queue);
          lastByQueue.delete(op.queue);
          break;
        case "markProcessed": {
          checkUint63("sequence", op.sequence);
          const row = s.getProcessed.get(op.source) as Row | undefined;
          if (row && op.sequence <= big(row.last_seq)) throw new DuplicateBatch();
          s.upsertProcessed.run(op.source, op.sequence);
          break;
        }
        default: {
          const never: never = op;
          throw new StoreError(`unknown write op ${(never as { kind: string }).kind}`);
        }
      }
    }
    return { result: { duplicate: false, appended, keyPackages, epochs, ...(pulled > 0 ? { pulled } : {}) }, appended: lastByQueue };
  }

  /**
   * The new snapshot replaces the latest; the older ones and the log are dropped
   * except from the newest snapshot at or before the oldest epoch that a
   * history entry without its tree needs (loadGroupAt).
   */
  #replaceSnapshot(groupId: string, epoch: bigint, state: Uint8Array): void {
    const s = this.#s;
    const needed = (s.oldestTreelessHistory.get(groupId) as Row).epoch;
    if (needed != null && big(needed) < epoch) {
      const old = s.getSnapshot.get(groupId) as Row | undefined;
      if (old) s.retainSnapshot.run(groupId, old.epoch, old.state);
      const from = (s.retainedAtOrBefore.get(groupId, needed) as Row | undefined)?.epoch;
      if (from != null) {
        s.pruneRetained.run(groupId, from);
        s.pruneLog.run(groupId, from);
      }
    } else {
      s.pruneRetained.run(groupId, epoch);
      s.pruneLog.run(groupId, epoch);
    }
    s.upsertSnapshot.run(groupId, epoch, state);
  }

  #feedHead(groupId: string): bigint {
    const row = this.#s.queueHead.get(groupFeed(groupId)) as Row | undefined;
    return row ? big(row.last_seq) : 0n;
  }

  /**
   * Copy up to `budget` entries of one membership into the client's queue (the
   * ones excluded for it are skipped) and move its cursor; a membership that
   * reached its end goes. Returns how many entries were copied.
   */
  #pullFeed(clientId: string, member: Row, budget: number, now: number, lastByQueue: Map<QueueId, bigint>): number {
    const s = this.#s;
    const groupId = String(member.group_id);
    const feed = groupFeed(groupId);
    const end = member.until == null ? this.#feedHead(groupId) : big(member.until);
    let cursor = big(member.cursor);
    if (cursor >= end) {
      if (member.until != null) s.deleteFeedMember.run(clientId, groupId);
      return 0;
    }
    const queue = clientQueue(clientId);
    let copied = 0;
    let scanned = 0;
    const rows = s.feedEntries.all(feed, cursor, end, budget) as Row[];
    for (const e of rows) {
      scanned++;
      cursor = big(e.seq);
      if (e.except_ids != null && String(e.except_ids).split("\n").includes(clientId)) continue;
      const seq = big((s.bumpQueue.get(queue) as Row).last_seq);
      s.insertSharedEntry.run(queue, seq, e.payload_id, now);
      s.addPayloadRef.run(e.payload_id);
      lastByQueue.set(queue, seq);
      copied++;
    }
    // Fewer rows than asked: nothing else is left up to `end` (earlier entries were trimmed or not for it).
    if (scanned < budget) cursor = end;
    if (member.until != null && cursor >= end) s.deleteFeedMember.run(clientId, groupId);
    else s.setFeedCursor.run(cursor, clientId, groupId);
    this.#trimFeed(groupId);
    return copied;
  }

  /** Drop feed entries every member has passed (all of them when no one receives the feed). */
  #trimFeed(groupId: string): void {
    const feed = groupFeed(groupId);
    const low = this.#s.lowestFeedCursor.get(groupId) as Row;
    this.#s.ackQueue.run(feed, low.low == null ? this.#feedHead(groupId) : big(low.low));
  }

  #consume(clientId: string, ciphersuite: number | undefined, now: number): StoredKeyPackage | undefined {
    const s = this.#s;
    const suite = ciphersuite ?? null;
    const regular = s.pickKeyPackage.get(clientId, 0, suite, suite, now) as Row | undefined;
    if (regular) {
      s.deleteKeyPackageId.run(regular.id);
      return keyPackageOf(regular);
    }
    const last = s.pickKeyPackage.get(clientId, 1, suite, suite, now) as Row | undefined;
    return last ? keyPackageOf(last) : undefined;
  }

  // -------------------------------------------------------------------------
  // reads

  async loadGroup(groupId: string): Promise<LoadedGroup | undefined> {
    return this.#run(() =>
      this.#db.transaction(() => {
        const g = this.#s.getGroup.get(groupId) as Row | undefined;
        if (!g) return undefined;
        const snap = this.#s.getSnapshot.get(groupId) as Row;
        const snapEpoch = big(snap.epoch);
        const log = (this.#s.readLog.all(groupId, snapEpoch) as Row[]).map(logEntryOf);
        return {
          groupId,
          epoch: big(g.epoch),
          snapshot: { epoch: snapEpoch, state: bytes(snap.state) },
          log,
          metadata: bytes(g.metadata),
          createdAt: num(g.created_at),
          updatedAt: num(g.updated_at),
        };
      })(),
    );
  }

  async loadGroupAt(groupId: string, epoch: bigint): Promise<LoadedGroup | undefined> {
    checkUint63("epoch", epoch);
    return this.#run(() =>
      this.#db.transaction(() => {
        const s = this.#s;
        const g = s.getGroup.get(groupId) as Row | undefined;
        if (!g || epoch > big(g.epoch)) return undefined;
        const latest = s.getSnapshot.get(groupId) as Row;
        const snap = big(latest.epoch) <= epoch ? latest : (s.retainedAtOrBefore.get(groupId, epoch) as Row | undefined);
        if (!snap) return undefined;
        const snapEpoch = big(snap.epoch);
        const log = (s.readLogRange.all(groupId, snapEpoch, epoch) as Row[]).map(logEntryOf);
        if (BigInt(log.length) !== epoch - snapEpoch) return undefined; // the log no longer reaches back
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

  async read(queue: QueueId, afterSeq: bigint, limit: number): Promise<QueueEntry[]> {
    checkUint63("seq", afterSeq);
    const n = Math.max(0, Math.floor(limit));
    return this.#run(() =>
      (this.#s.readQueue.all(queue, afterSeq, n) as Row[]).map((r) => ({
        seq: big(r.seq),
        payload: bytes(r.payload),
        enqueuedAt: num(r.enqueued_at),
      })),
    );
  }

  async ack(queue: QueueId, uptoSeq: bigint): Promise<number> {
    checkUint63("seq", uptoSeq);
    return this.#run(() => this.#s.ackQueue.run(queue, uptoSeq).changes);
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
    const w = rateWindow(rule, t);
    return this.#run(() =>
      this.#db.transaction(() => {
        const row = this.#s.getRate.get(key) as Row | undefined;
        const used = row && num(row.window_start) === w.start ? num(row.count) : 0;
        const allowed = used + w.cost <= rule.limit;
        const count = allowed ? used + w.cost : used;
        if (allowed || !row || num(row.window_start) !== w.start) this.#s.upsertRate.run(key, w.start, w.end, count);
        return { allowed, count, remaining: Math.max(0, rule.limit - count), resetAt: w.end };
      }).immediate(),
    );
  }

  async purgeExpired(now?: number): Promise<PurgeResult> {
    const t = now ?? this.#now();
    return this.#run(() =>
      this.#db.transaction(() => {
        this.#s.purgeHistoryJoiners.run(t);
        const historyEntries = this.#s.purgeHistory.run(t).changes;
        const keyPackages = this.#s.purgeKeyPackages.run(t).changes;
        const rateLimits = this.#s.purgeRates.run(t).changes;
        return { historyEntries, keyPackages, rateLimits };
      }).immediate(),
    );
  }

  async ping(): Promise<void> {
    this.#run(() => this.#s.ping.get());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // Calls made before close() are written (or fail) before the connection goes.
    this.#flush();
    this.#closed = true;
    this.#notifier.close();
    this.#db.close();
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

/** Payload objects of `append` ops used by two or more of them, with their use count. */
function sharedAppendPayloads(ops: readonly WriteOp[]): Map<Uint8Array, { refs: number; id?: bigint }> {
  const count = new Map<Uint8Array, number>();
  for (const op of ops) if (op.kind === "append") count.set(op.payload, (count.get(op.payload) ?? 0) + 1);
  const out = new Map<Uint8Array, { refs: number; id?: bigint }>();
  for (const [payload, refs] of count) if (refs > 1) out.set(payload, { refs });
  return out;
}

function logEntryOf(r: Row): EpochLogEntry {
  return { epoch: big(r.epoch), entry: bytes(r.entry), createdAt: num(r.created_at) };
}

function keyPackageOf(r: Row): StoredKeyPackage {
  const base = {
    clientId: String(r.client_id),
    ref: bytes(r.ref),
    ciphersuite: num(r.ciphersuite),
    keyPackage: bytes(r.key_package),
    lastResort: num(r.last_resort) === 1,
  };
  return r.expires_at == null ? base : { ...base, expiresAt: num(r.expires_at) };
}

// Every statement is prepared once per connection.
function prepare(db: Database.Database) {
  const p = (sql: string) => db.prepare(sql);
  return {
    ping: p("SELECT 1"),
    groupEpoch: p("SELECT epoch FROM groups WHERE group_id = ?"),
    getGroup: p("SELECT epoch, metadata, created_at, updated_at FROM groups WHERE group_id = ?"),
    insertGroup: p("INSERT INTO groups (group_id, epoch, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"),
    setEpoch: p("UPDATE groups SET epoch = ?, metadata = coalesce(?, metadata), updated_at = ? WHERE group_id = ?"),
    setMetadata: p("UPDATE groups SET metadata = ?, updated_at = ? WHERE group_id = ?"),
    upsertSnapshot: p(
      "INSERT INTO group_snapshots (group_id, epoch, state) VALUES (?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
    ),
    getSnapshot: p("SELECT epoch, state FROM group_snapshots WHERE group_id = ?"),
    getSnapshotEpoch: p("SELECT epoch FROM group_snapshots WHERE group_id = ?"),
    insertLog: p("INSERT INTO group_log (group_id, epoch, entry, created_at) VALUES (?, ?, ?, ?)"),
    pruneLog: p("DELETE FROM group_log WHERE group_id = ? AND epoch <= ?"),
    readLogRange: p("SELECT epoch, entry, created_at FROM group_log WHERE group_id = ? AND epoch > ? AND epoch <= ? ORDER BY epoch"),
    oldestTreelessHistory: p("SELECT min(epoch) AS epoch FROM history_epochs WHERE group_id = ? AND length(ratchet_tree) = 0"),
    retainSnapshot: p("INSERT OR IGNORE INTO retained_snapshots (group_id, epoch, state) VALUES (?, ?, ?)"),
    retainedAtOrBefore: p("SELECT epoch, state FROM retained_snapshots WHERE group_id = ? AND epoch <= ? ORDER BY epoch DESC LIMIT 1"),
    pruneRetained: p("DELETE FROM retained_snapshots WHERE group_id = ? AND epoch < ?"),
    readLog: p("SELECT epoch, entry, created_at FROM group_log WHERE group_id = ? AND epoch > ? ORDER BY epoch"),
    listGroups: p("SELECT group_id FROM groups WHERE (? IS NULL OR group_id > ?) ORDER BY group_id LIMIT ?"),
    deleteGroupAll: [
      p("DELETE FROM groups WHERE group_id = ?"),
      p("DELETE FROM group_snapshots WHERE group_id = ?"),
      p("DELETE FROM retained_snapshots WHERE group_id = ?"),
      p("DELETE FROM group_log WHERE group_id = ?"),
      p("DELETE FROM proposals WHERE group_id = ?"),
      p("DELETE FROM history_joiners WHERE group_id = ?"),
      p("DELETE FROM history_epochs WHERE group_id = ?"),
      p("DELETE FROM fanout_tokens WHERE group_id = ?"),
    ],
    insertProposal: p("INSERT OR IGNORE INTO proposals (group_id, epoch, ref, proposal) VALUES (?, ?, ?, ?)"),
    deleteProposal: p("DELETE FROM proposals WHERE group_id = ? AND ref = ?"),
    clearOldProposals: p("DELETE FROM proposals WHERE group_id = ? AND epoch < ?"),
    listProposals: p("SELECT epoch, ref, proposal FROM proposals WHERE group_id = ? AND epoch = ? ORDER BY id"),
    upsertHistory: p(
      "INSERT INTO history_epochs (group_id, epoch, ratchet_tree, group_info, expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id, epoch) DO UPDATE SET ratchet_tree = excluded.ratchet_tree, group_info = excluded.group_info, expires_at = excluded.expires_at",
    ),
    deleteHistoryJoinersOfEpoch: p("DELETE FROM history_joiners WHERE group_id = ? AND epoch = ?"),
    insertHistoryJoiner: p("INSERT OR IGNORE INTO history_joiners (group_id, epoch, kp_ref) VALUES (?, ?, ?)"),
    deleteHistoryJoiner: p("DELETE FROM history_joiners WHERE group_id = ? AND kp_ref = ?"),
    deleteHistoryJoinerAt: p("DELETE FROM history_joiners WHERE group_id = ? AND kp_ref = ? AND epoch = ?"),
    deleteEmptyHistory: p(
      "DELETE FROM history_epochs WHERE group_id = ? AND NOT EXISTS (SELECT 1 FROM history_joiners j WHERE j.group_id = history_epochs.group_id AND j.epoch = history_epochs.epoch)",
    ),
    listHistory: p("SELECT * FROM history_epochs WHERE group_id = ? AND expires_at > ? ORDER BY epoch"),
    historyForJoiner: p(
      "SELECT h.* FROM history_joiners j JOIN history_epochs h ON h.group_id = j.group_id AND h.epoch = j.epoch WHERE j.group_id = ? AND j.kp_ref = ? AND h.expires_at > ? ORDER BY h.epoch DESC LIMIT 1",
    ),
    historyJoiners: p("SELECT kp_ref FROM history_joiners WHERE group_id = ? AND epoch = ? ORDER BY kp_ref"),
    purgeHistoryJoiners: p(
      "DELETE FROM history_joiners WHERE (group_id, epoch) IN (SELECT group_id, epoch FROM history_epochs WHERE expires_at <= ?)",
    ),
    purgeHistory: p("DELETE FROM history_epochs WHERE expires_at <= ?"),
    upsertToken: p(
      "INSERT INTO fanout_tokens (group_id, client_id, token) VALUES (?, ?, ?) ON CONFLICT (group_id, client_id) DO UPDATE SET token = excluded.token",
    ),
    deleteToken: p("DELETE FROM fanout_tokens WHERE group_id = ? AND client_id = ?"),
    listTokens: p("SELECT client_id, token FROM fanout_tokens WHERE group_id = ? ORDER BY client_id"),
    getToken: p("SELECT token FROM fanout_tokens WHERE group_id = ? AND client_id = ?"),
    upsertClient: p(
      "INSERT INTO clients (client_id, sig_key, auth_data, created_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET sig_key = excluded.sig_key, auth_data = excluded.auth_data, updated_at = excluded.updated_at",
    ),
    getClient: p("SELECT sig_key, auth_data, created_at, updated_at FROM clients WHERE client_id = ?"),
    deleteClient: p("DELETE FROM clients WHERE client_id = ?"),
    keyPackageByRef: p("SELECT id FROM key_packages WHERE ref = ?"),
    insertKeyPackage: p(
      "INSERT INTO key_packages (client_id, ciphersuite, ref, key_package, last_resort, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ),
    deleteLastResort: p("DELETE FROM key_packages WHERE client_id = ? AND ciphersuite = ? AND last_resort = 1"),
    pickKeyPackage: p(
      "SELECT * FROM key_packages WHERE client_id = ? AND last_resort = ? AND (? IS NULL OR ciphersuite = ?) AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1",
    ),
    deleteKeyPackageId: p("DELETE FROM key_packages WHERE id = ?"),
    deleteKeyPackageRef: p("DELETE FROM key_packages WHERE client_id = ? AND ref = ?"),
    deleteKeyPackagesOfClient: p("DELETE FROM key_packages WHERE client_id = ?"),
    countKeyPackages: p(
      "SELECT count(*) AS n FROM key_packages WHERE client_id = ? AND last_resort = 0 AND (? IS NULL OR ciphersuite = ?) AND (expires_at IS NULL OR expires_at > ?)",
    ),
    purgeKeyPackages: p("DELETE FROM key_packages WHERE expires_at IS NOT NULL AND expires_at <= ?"),
    bumpQueue: p(
      "INSERT INTO queues (queue, last_seq) VALUES (?, 1) ON CONFLICT (queue) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
    ),
    insertEntry: p("INSERT INTO queue_entries (queue, seq, payload, enqueued_at) VALUES (?, ?, ?, ?)"),
    insertPayload: p("INSERT INTO queue_payloads (data, refs) VALUES (?, ?) RETURNING id"),
    insertFeedEntry: p("INSERT INTO queue_entries (queue, seq, payload, payload_id, enqueued_at, except_ids) VALUES (?, ?, x'', ?, ?, ?)"),
    addPayloadRef: p("UPDATE queue_payloads SET refs = refs + 1 WHERE id = ?"),
    feedEntries: p("SELECT seq, payload_id, except_ids FROM queue_entries WHERE queue = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"),
    getFeedMember: p("SELECT group_id, cursor, until FROM feed_members WHERE client_id = ? AND group_id = ?"),
    upsertFeedMember: p(
      "INSERT INTO feed_members (client_id, group_id, cursor, until) VALUES (?, ?, ?, NULL) ON CONFLICT (client_id, group_id) DO UPDATE SET cursor = excluded.cursor, until = NULL",
    ),
    leaveFeed: p("UPDATE feed_members SET until = ? WHERE client_id = ? AND group_id = ? AND until IS NULL"),
    leaveFeedAll: p("UPDATE feed_members SET until = ? WHERE group_id = ? AND until IS NULL"),
    dropFinishedFeedMembers: p("DELETE FROM feed_members WHERE group_id = ? AND until IS NOT NULL AND cursor >= until"),
    deleteFeedMember: p("DELETE FROM feed_members WHERE client_id = ? AND group_id = ?"),
    setFeedCursor: p("UPDATE feed_members SET cursor = ? WHERE client_id = ? AND group_id = ?"),
    feedMembersOfClient: p("SELECT group_id, cursor, until FROM feed_members WHERE client_id = ? ORDER BY group_id"),
    feedMembershipsOfClient: p(
      "SELECT m.group_id, m.cursor, m.until, coalesce(q.last_seq, 0) AS head FROM feed_members m LEFT JOIN queues q ON q.queue = 'feed:' || m.group_id WHERE m.client_id = ? ORDER BY m.group_id",
    ),
    feedMembersOfGroup: p("SELECT client_id FROM feed_members WHERE group_id = ? AND until IS NULL ORDER BY client_id"),
    lowestFeedCursor: p("SELECT min(cursor) AS low FROM feed_members WHERE group_id = ?"),
    insertSharedEntry: p("INSERT INTO queue_entries (queue, seq, payload, payload_id, enqueued_at) VALUES (?, ?, x'', ?, ?)"),
    readQueue: p(
      "SELECT e.seq, coalesce(p.data, e.payload) AS payload, e.enqueued_at FROM queue_entries e LEFT JOIN queue_payloads p ON p.id = e.payload_id WHERE e.queue = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
    ),
    ackQueue: p("DELETE FROM queue_entries WHERE queue = ? AND seq <= ?"),
    queueHead: p("SELECT last_seq FROM queues WHERE queue = ?"),
    queueStats: p("SELECT min(seq) AS first, count(*) AS n FROM queue_entries WHERE queue = ?"),
    deleteQueueEntries: p("DELETE FROM queue_entries WHERE queue = ?"),
    deleteQueue: p("DELETE FROM queues WHERE queue = ?"),
    getProcessed: p("SELECT last_seq FROM processed WHERE source = ?"),
    upsertProcessed: p(
      "INSERT INTO processed (source, last_seq) VALUES (?, ?) ON CONFLICT (source) DO UPDATE SET last_seq = excluded.last_seq",
    ),
    getRate: p("SELECT window_start, count FROM rate_limits WHERE key = ?"),
    upsertRate: p(
      "INSERT INTO rate_limits (key, window_start, window_end, count) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, window_end = excluded.window_end, count = excluded.count",
    ),
    purgeRates: p("DELETE FROM rate_limits WHERE window_end <= ?"),
  };
}

