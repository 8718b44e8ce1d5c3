// The scale-out adapter: MongoDB (a replica set or sharded cluster: the
// adapter needs multi-document transactions and change streams). Several DS
// instances share one database:
// - every apply is one transaction (snapshot read concern, majority write
//   concern): acknowledged means majority-committed; a commit whose outcome
//   the driver could not learn is reported as such (StoreOutcomeUnknownError),
//   never as "nothing applied";
// - reads outside transactions use majority read concern (nothing a failover
//   can roll back is ever seen), reads that must be consistent (a group and its
//   log, a queue's counters) run in a snapshot transaction;
// - the epoch CAS is an updateOne filtered on {_id, epoch: expected}: of N
//   concurrent commits one matches, the others hit a write conflict, are
//   retried by withTransaction and then see the new epoch -> EpochConflictError;
// - queue sequences come from a counter document ($inc in the transaction), so
//   they are gap-free (a rolled-back transaction rolls its $inc back);
// - KeyPackages are consumed with findOneAndDelete (one winner per document),
//   oldest first by a per-client counter;
// - large values are chunked (blobs.ts), so no document nears 16 MiB;
// - wake-ups: each instance notifies its own listeners after commit; other
//   instances' commits arrive by a change stream on the queue counters that is
//   open from the start, or by polling while it is down (watcher.ts);
// - close() lets the calls in flight finish (bounded) before the connection goes.
//
// The write ops are in apply.ts (one method per op), the schema in schema.ts.

import * as hardening from "./harden-ds.js";
import * as scale from "./scale-ops.js";
import { randomBytes } from "node:crypto";
import { MongoClient, type ClientSession, type Collection, type Db } from "mongodb";
import { AppendNotifier, checkUint63, rateWindow } from "../common.js";
import { StoreClosedError, StoreOutcomeUnknownError } from "../errors.js";
import type {
  AppendListener,
  AppliedWrite,
  ClientRecord,
  EpochLogEntry,
  FeedMembership,
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
import { DEFAULT_FEED_PULL_LIMIT, groupFeed, type QueueTrim } from "../port.js";
import { BatchApplier, DuplicateBatch, queuesOf, type ApplyContext } from "./apply.js";
import { assembleBlob, blobIdsOf, DEFAULT_BLOB_LIMITS, isBlobRef, type BlobLimits } from "./blobs.js";
import { membershipOf } from "./documents.js";
import { markUpsertRace, translateMongoError, type ErrorPhase } from "./errors.js";
import { collectionsOf, migrateMongo, type Collections, type Doc } from "./schema.js";
import { copyBytes, databaseOf, drainBatches, listLimit, MAX_FIND_LIMIT, mongoClientOptions } from "./values.js";
import { stamp } from "./wakeups.js";
import { Watcher } from "./watcher.js";

export { MONGO_MIGRATIONS, migrateMongo } from "./schema.js";

export interface MongoStoreOptions {
  readonly uri: string;
  /** Database name (default: the URI's path, else "mimi_ds"). */
  readonly database?: string;
  /** Clock, for tests (default Date.now). */
  readonly now?: () => number;
  /** Polling interval while the change stream is down or off (default 250 ms). */
  readonly pollMs?: number;
  /** Use change streams for wake-ups (default true); false: poll only. */
  readonly changeStreams?: boolean;
  /** How long close() waits for calls in flight before closing the connection (default 10 s). */
  readonly closeTimeoutMs?: number;
  /** Inline and chunk sizes of large values (default DEFAULT_BLOB_LIMITS; tests use tiny ones). */
  readonly blobLimits?: BlobLimits;
  /** Most pending entries a re-join copies in its transaction (default DEFAULT_FEED_PULL_LIMIT). */
  readonly joinPullLimit?: number;
  /** Most payload bytes one pull copies in its transaction (default 8 MiB). */
  readonly pullBytes?: number;
  /** First delay before re-opening a failed change stream (default 1 s, doubling to 30 s). */
  readonly streamRestartMs?: number;
  /** Documents deleted per purge step (default 1000). */
  readonly purgeBatch?: number;
}

const DUPLICATE: AppliedWrite = { duplicate: true, appended: [], keyPackages: [], epochs: [] };
const EMPTY: AppliedWrite = { duplicate: false, appended: [], keyPackages: [], epochs: [] };

export async function openMongoStore(options: MongoStoreOptions): Promise<MongoStore> {
  const client = new MongoClient(options.uri, mongoClientOptions(options.uri));
  try {
    await client.connect();
    const db = client.db(options.database ?? (databaseOf(options.uri) || "mimi_ds"));
    await migrateMongo(db);
    const store = new MongoStore(client, db, options);
    await store.start();
    return store;
  } catch (err) {
    await client.close().catch(() => undefined);
    throw translateMongoError(err, { phase: "read", closing: false });
  }
}

export class MongoStore implements Store {
  readonly #client: MongoClient;
  readonly #c: Collections;
  /** Shared entry prefixes (outbox recipient sections), cached by id. */
  #prefixReader!: scale.PrefixReader;
  readonly #now: () => number;
  readonly #notifier = new AppendNotifier();
  readonly #watcher: Watcher;
  readonly #instance = randomBytes(9).toString("base64url");
  #stamps = 0;
  readonly #o: Required<Pick<MongoStoreOptions, "closeTimeoutMs" | "blobLimits" | "joinPullLimit" | "pullBytes" | "purgeBatch">>;
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(client: MongoClient, db: Db, options: MongoStoreOptions) {
    this.#client = client;
    this.#c = collectionsOf(db);
    this.#prefixReader = new scale.PrefixReader(scale.scaleCollections(this.#c));
    this.#now = options.now ?? Date.now;
    this.#o = {
      closeTimeoutMs: options.closeTimeoutMs ?? 10_000,
      blobLimits: options.blobLimits ?? DEFAULT_BLOB_LIMITS,
      joinPullLimit: options.joinPullLimit ?? DEFAULT_FEED_PULL_LIMIT,
      pullBytes: options.pullBytes ?? 8 * 1024 * 1024,
      purgeBatch: options.purgeBatch ?? 1000,
    };
    this.#watcher = new Watcher({
      client,
      db,
      queues: this.#c.queues,
      notifier: this.#notifier,
      instance: this.#instance,
      changeStreams: options.changeStreams ?? true,
      pollMs: options.pollMs ?? 250,
      restartMs: options.streamRestartMs ?? 1000,
    });
  }

  /** Opens the wake-up stream (called by openMongoStore before the store is handed out). */
  async start(): Promise<void> {
    await this.#watcher.start();
  }

  /** The wake-up side, for diagnostics and tests. */
  get wakeups(): { readonly streaming: boolean; readonly polling: boolean; readonly stats: Watcher["stats"] } {
    const w = this.#watcher;
    return { streaming: w.streaming, polling: w.polling, stats: w.stats };
  }

  // -------------------------------------------------------------------------
  // running calls

  /** Every call is tracked, so close() can let it finish. */
  #track<T>(f: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new StoreClosedError());
    const p = f();
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  #translate(err: unknown, phase: ErrorPhase): unknown {
    return translateMongoError(err, { phase, closing: this.#closed });
  }

  /** A plain (majority) read. */
  #read<T>(f: () => Promise<T>): Promise<T> {
    return this.#track(async () => {
      try {
        return await f();
      } catch (err) {
        throw this.#translate(err, "read");
      }
    });
  }

  /** Reads from one snapshot (a read-only transaction). */
  #readTx<T>(f: (session: ClientSession) => Promise<T>): Promise<T> {
    return this.#track(async () => {
      const session = this.#client.startSession();
      try {
        // Committing with w: majority is what makes a snapshot transaction's reads majority-committed.
        return await session.withTransaction(f, { readConcern: { level: "snapshot" }, writeConcern: { w: "majority" }, readPreference: "primary" });
      } catch (err) {
        throw this.#translate(err, "read");
      } finally {
        await session.endSession().catch(() => undefined);
      }
    });
  }

  /** A write transaction; an error is translated by where it happened (before or during the commit). */
  async #writeTx<T>(f: (session: ClientSession) => Promise<T>): Promise<T> {
    const session = this.#client.startSession();
    let phase: ErrorPhase = "operation";
    try {
      return await session.withTransaction(
        async (s) => {
          phase = "operation";
          let r: T;
          try {
            r = await f(s);
          } catch (err) {
            markUpsertRace(err); // then withTransaction retries it as it does a write conflict
            throw err;
          }
          phase = "commit";
          return r;
        },
        { readConcern: { level: "snapshot" }, writeConcern: { w: "majority" }, readPreference: "primary" },
      );
    } catch (err) {
      throw this.#translate(err, phase);
    } finally {
      await session.endSession().catch(() => undefined);
    }
  }

  #context(session: ClientSession): ApplyContext {
    return {
      c: this.#c,
      session,
      now: this.#now(),
      wallNow: Date.now(),
      nextStamp: () => stamp(this.#instance, ++this.#stamps),
      newBlobId: () => randomBytes(12).toString("base64url"),
      blobLimits: this.#o.blobLimits,
      joinPullLimit: this.#o.joinPullLimit,
      pullBytes: this.#o.pullBytes,
    };
  }

  // -------------------------------------------------------------------------
  // apply

  apply(batch: StoreWrite): Promise<AppliedWrite> {
    return this.#track(async () => {
      if (batch.ops.length === 0) return EMPTY;
      let out;
      try {
        out = await this.#writeTx((session) => new BatchApplier(this.#context(session)).run(batch.ops));
      } catch (err) {
        if (err instanceof DuplicateBatch) return DUPLICATE;
        // It may have committed: let this instance's listeners look (a spurious wake-up is harmless, a lost one is not).
        if (err instanceof StoreOutcomeUnknownError) this.#recheck(queuesOf(batch.ops));
        throw err;
      }
      // Local listeners wake at once; other instances' by their change stream or polling.
      for (const [queue, seq] of out.last) this.#notifier.notify(queue, seq);
      return out.result;
    });
  }

  #recheck(queues: readonly QueueId[]): void {
    if (queues.length === 0 || this.#closed) return;
    this.#c.queues
      .find({ _id: { $in: [...queues] } }, { projection: { lastSeq: 1 } })
      .toArray()
      .then(
        (docs) => {
          for (const d of docs) this.#notifier.notify(String(d._id), big(d.lastSeq));
        },
        () => undefined,
      );
  }

  // -------------------------------------------------------------------------
  // reads

  async loadGroup(groupId: string): Promise<LoadedGroup | undefined> {
    return this.#load(groupId);
  }

  async loadGroupAt(groupId: string, epoch: bigint): Promise<LoadedGroup | undefined> {
    return this.#load(groupId, checkUint63("epoch", epoch));
  }

  /** As in the SQLite adapter: the newest snapshot at or before `at` (default: the current epoch) and the log up to it. */
  #load(groupId: string, at?: bigint): Promise<LoadedGroup | undefined> {
    return this.#readTx(async (session) => {
      const c = this.#c;
      const o = { session };
      const g = await c.groups.findOne({ _id: groupId }, o);
      if (!g) return undefined;
      const epoch = at ?? big(g.epoch);
      if (epoch > big(g.epoch)) return undefined;
      const latest = (await c.snapshots.findOne({ _id: groupId }, o))!;
      const snap = big(latest.epoch) <= epoch ? latest : await c.retained.findOne({ groupId, epoch: { $lte: epoch } }, { ...o, sort: { epoch: -1 } });
      if (!snap) return undefined;
      const snapEpoch = big(snap.epoch);
      const logDocs = await c.log.find({ groupId, epoch: { $gt: snapEpoch, $lte: epoch } }, { ...o, sort: { epoch: 1 } }).toArray();
      if (at !== undefined && BigInt(logDocs.length) !== epoch - snapEpoch) return undefined; // the log no longer reaches back
      const value = await this.#blobs([snap.state, ...logDocs.map((d) => d.entry)], session);
      return {
        groupId,
        epoch,
        snapshot: { epoch: snapEpoch, state: value(snap.state) },
        log: logDocs.map((d) => logEntryOf(d, value)),
        metadata: copyBytes(g.metadata),
        createdAt: num(g.createdAt),
        updatedAt: num(g.updatedAt),
      };
    });
  }

  /** Reads the chunks of the chunked values among `values`; returns the bytes of any of them. */
  async #blobs(values: readonly unknown[], session: ClientSession): Promise<(v: unknown) => Uint8Array> {
    const ids = blobIdsOf(values);
    const byId = new Map<string, { i: unknown; data: unknown }[]>();
    if (ids.length > 0) {
      for (const d of await this.#c.chunks.find({ b: { $in: ids } }, { session, sort: { b: 1, i: 1 } }).toArray()) {
        const list = byId.get(String(d.b)) ?? [];
        list.push({ i: d.i, data: d.data });
        byId.set(String(d.b), list);
      }
    }
    return (v) => (isBlobRef(v) ? assembleBlob(v, byId.get(v.blob) ?? []) : copyBytes(v));
  }

  async groupEpoch(groupId: string): Promise<bigint | undefined> {
    return this.#read(async () => {
      const g = await this.#c.groups.findOne({ _id: groupId }, { projection: { epoch: 1 } });
      return g ? big(g.epoch) : undefined;
    });
  }

  async readGroupLog(groupId: string, afterEpoch: bigint): Promise<readonly EpochLogEntry[] | undefined> {
    checkUint63("epoch", afterEpoch);
    return this.#readTx(async (session) => {
      const snap = await this.#c.snapshots.findOne({ _id: groupId }, { session, projection: { epoch: 1 } });
      if (!snap || afterEpoch < big(snap.epoch)) return undefined;
      const docs = await this.#c.log.find({ groupId, epoch: { $gt: afterEpoch } }, { session, sort: { epoch: 1 } }).toArray();
      const value = await this.#blobs(
        docs.map((d) => d.entry),
        session,
      );
      return docs.map((d) => logEntryOf(d, value));
    });
  }

  async listGroups(opts?: { after?: string; limit?: number }): Promise<string[]> {
    const limit = listLimit(opts?.limit); // SQLite's LIMIT: negative = all, 0 = none
    return this.#read(async () => {
      if (limit === 0) return [];
      const filter = opts?.after !== undefined ? { _id: { $gt: opts.after } } : {};
      const docs = await this.#c.groups.find(filter, { projection: { _id: 1 }, sort: { _id: 1 }, ...(limit !== undefined ? { limit } : {}) }).toArray();
      return docs.map((d) => String(d._id));
    });
  }

  async listProposals(groupId: string, epoch: bigint): Promise<StoredProposal[]> {
    checkUint63("epoch", epoch);
    return this.#read(async () =>
      (await this.#c.proposals.find({ groupId, epoch }, { sort: { order: 1 } }).toArray()).map((d) => ({
        epoch: big(d.epoch),
        ref: copyBytes(d.ref),
        proposal: copyBytes(d.proposal),
        createdAt: d.createdAt === undefined ? 0 : num(d.createdAt),
      })),
    );
  }

  async listHistory(groupId: string, now?: number): Promise<HistoryEntry[]> {
    const t = now ?? this.#now();
    return this.#readTx(async (session) => {
      const docs = await this.#c.history.find({ groupId, expiresAt: { $gt: t } }, { session, sort: { epoch: 1 } }).toArray();
      const value = await this.#blobs(
        docs.flatMap((d) => [d.ratchetTree, d.groupInfo]),
        session,
      );
      return docs.map((d) => historyOf(d, value));
    });
  }

  async historyForJoiner(groupId: string, keyPackageRef: Uint8Array, now?: number): Promise<HistoryEntry | undefined> {
    const t = now ?? this.#now();
    return this.#readTx(async (session) => {
      const d = await this.#c.history.findOne({ groupId, joiners: keyPackageRef, expiresAt: { $gt: t } }, { session, sort: { epoch: -1 } });
      if (!d) return undefined;
      return historyOf(d, await this.#blobs([d.ratchetTree, d.groupInfo], session));
    });
  }

  async fanoutTokens(groupId: string): Promise<Map<string, Uint8Array>> {
    return this.#read(async () => {
      const docs = await this.#c.tokens.find({ groupId }, { sort: { clientId: 1 } }).toArray();
      return new Map(docs.map((d) => [String(d.clientId), copyBytes(d.token)]));
    });
  }

  async fanoutToken(groupId: string, clientId: string): Promise<Uint8Array | undefined> {
    return this.#read(async () => {
      const d = await this.#c.tokens.findOne({ groupId, clientId });
      return d ? copyBytes(d.token) : undefined;
    });
  }

  async getClient(clientId: string): Promise<ClientRecord | undefined> {
    return this.#read(async () => {
      const d = await this.#c.clients.findOne({ _id: clientId });
      if (!d) return undefined;
      return {
        clientId,
        signaturePublicKey: copyBytes(d.sigKey),
        authData: copyBytes(d.authData),
        createdAt: num(d.createdAt),
        updatedAt: num(d.updatedAt),
      };
    });
  }

  async consumeKeyPackage(clientId: string, ciphersuite?: number): Promise<StoredKeyPackage | undefined> {
    const op: WriteOp = ciphersuite === undefined ? { kind: "consumeKeyPackage", clientId } : { kind: "consumeKeyPackage", clientId, ciphersuite };
    return (await this.apply({ ops: [op] })).keyPackages[0];
  }

  async countKeyPackages(clientId: string, ciphersuite?: number, now?: number): Promise<number> {
    const t = now ?? this.#now();
    return this.#read(() =>
      this.#c.keyPackages.countDocuments({
        clientId,
        lastResort: false,
        $or: [{ expiresAt: null }, { expiresAt: { $gt: t } }],
        ...(ciphersuite !== undefined ? { ciphersuite } : {}),
      }),
    );
  }

  // -------------------------------------------------------------------------
  // queues

  async read(queue: QueueId, afterSeq: bigint, limit: number, maxBytes?: number): Promise<QueueEntry[]> {
    checkUint63("seq", afterSeq);
    const n = Math.min(MAX_FIND_LIMIT, Math.max(0, Math.floor(limit)));
    return this.#read(async () => {
      if (!(n > 0)) return [];
      // A byte bound: sizes first (server-side $binarySize; queue payloads are stored inline), then the entries up to the last that fits.
      const upto = maxBytes !== undefined ? await lastSeqWithin(this.#c.entries, queue, afterSeq, n, maxBytes) : undefined;
      const seq = upto !== undefined ? { $gt: afterSeq, $lte: upto } : { $gt: afterSeq };
      const docs = await this.#c.entries.find({ queue, seq }, { sort: { seq: 1 }, limit: n }).toArray();
      return this.#prefixReader.entries(docs);
    });
  }

  /** As in SQLite: one `ack` op through apply (the count is AppliedWrite.acked). */
  async ack(queue: QueueId, uptoSeq: bigint): Promise<number> {
    checkUint63("seq", uptoSeq);
    return (await this.apply({ ops: [{ kind: "ack", queue, uptoSeq }] })).acked ?? 0;
  }

  async queueInfo(queue: QueueId): Promise<QueueInfo> {
    return this.#readTx(async (session) => {
      const head = await this.#c.queues.findOne({ _id: queue }, { session, projection: { lastSeq: 1 } });
      const first = await this.#c.entries.findOne({ queue }, { session, sort: { seq: 1 }, projection: { seq: 1 } });
      const length = first ? await this.#c.entries.countDocuments({ queue }, { session }) : 0;
      return { lastSeq: head ? big(head.lastSeq) : 0n, firstSeq: first ? big(first.seq) : undefined, length };
    });
  }

  /** The counter alone: what an idle wait reads (one document, not a transaction). */
  #lastSeq(queue: QueueId): Promise<bigint> {
    return this.#read(async () => {
      const head = await this.#c.queues.findOne({ _id: queue }, { projection: { lastSeq: 1 } });
      return head ? big(head.lastSeq) : 0n;
    });
  }

  async feedMemberships(clientId: string): Promise<FeedMembership[]> {
    return this.#read(async () => {
      const rows = await this.#c.feedMembers.find({ clientId }, { sort: { groupId: 1 } }).toArray();
      if (rows.length === 0) return [];
      const heads = await this.#c.queues.find({ _id: { $in: rows.map((r) => groupFeed(String(r.groupId))) } }, { projection: { lastSeq: 1 } }).toArray();
      const headOf = new Map(heads.map((q) => [String(q._id), big(q.lastSeq)]));
      return rows.map((r) => {
        const m = membershipOf(r);
        return {
          groupId: String(r.groupId),
          head: headOf.get(groupFeed(String(r.groupId))) ?? 0n,
          cursor: m.cursor,
          ...(m.until === undefined ? {} : { until: m.until }),
        };
      });
    });
  }

  async feedMembers(groupId: string): Promise<string[]> {
    return this.#read(async () =>
      (await this.#c.feedMembers.find({ groupId, until: null }, { sort: { clientId: 1 }, projection: { clientId: 1 } }).toArray()).map((r) =>
        String(r.clientId),
      ),
    );
  }

  subscribe(queue: QueueId, listener: AppendListener): Unsubscribe {
    if (this.#closed) throw new StoreClosedError();
    return this.#notifier.subscribe(queue, listener);
  }

  waitForAppend(queue: QueueId, afterSeq: bigint, signal?: AbortSignal): Promise<bigint> {
    return this.#notifier.waitFor(queue, afterSeq, () => this.#lastSeq(queue), signal);
  }

  // -------------------------------------------------------------------------
  // at-most-once, rate limits, maintenance

  async isProcessed(source: string, sequence: bigint): Promise<boolean> {
    return this.#read(async () => {
      const p = await this.#c.processed.findOne({ _id: source });
      return p !== null && sequence <= big(p.lastSeq);
    });
  }

  async rateLimit(key: string, rule: RateLimitRule, now?: number): Promise<RateLimitResult> {
    const t = now ?? this.#now();
    const w = rateWindow(rule, t);
    return this.#track(() =>
      this.#writeTx(async (session) => {
        const row = await this.#c.rates.findOne({ _id: key }, { session });
        const sameWindow = row !== null && num(row.windowStart) === w.start;
        const used = sameWindow ? num(row.count) : 0;
        const allowed = used + w.cost <= rule.limit;
        const count = allowed ? used + w.cost : used;
        // A denied hit in the current window changes nothing (as in SQLite).
        if (allowed || !sameWindow) {
          await this.#c.rates.updateOne({ _id: key }, { $set: { windowStart: w.start, windowEnd: w.end, count } }, { session, upsert: true });
        }
        return { allowed, count, remaining: Math.max(0, rule.limit - count), resetAt: w.end };
      }),
    );
  }

  /**
   * In bounded steps (purgeBatch documents each, a short transaction for
   * history entries and their chunks, single deletes for the rest), each
   * using the expiry indexes; never one transaction over everything expired.
   */
  async purgeExpired(now?: number): Promise<PurgeResult> {
    const t = now ?? this.#now();
    const n = this.#o.purgeBatch;
    const c = this.#c;
    return this.#track(async () => {
      const historyEntries = await drainBatches(n, () =>
        this.#writeTx(async (session) => {
          const docs = await c.history.find({ expiresAt: { $lte: t } }, { session, limit: n, projection: { ratchetTree: 1, groupInfo: 1 } }).toArray();
          if (docs.length === 0) return 0;
          const r = await c.history.deleteMany({ _id: { $in: docs.map((d) => d._id) } }, { session });
          const ids = blobIdsOf(docs.flatMap((d) => [d.ratchetTree, d.groupInfo]));
          if (ids.length > 0) await c.chunks.deleteMany({ b: { $in: ids } }, { session });
          return r.deletedCount;
        }),
      );
      const step = (coll: typeof c.keyPackages, filter: Doc) => async (): Promise<number> => {
        try {
          const ids = (await coll.find(filter, { limit: n, projection: { _id: 1 } }).toArray()).map((d) => d._id);
          return ids.length === 0 ? 0 : (await coll.deleteMany({ _id: { $in: ids }, ...filter })).deletedCount;
        } catch (err) {
          throw this.#translate(err, "operation");
        }
      };
      const keyPackages = await drainBatches(n, step(c.keyPackages, { expiresAt: { $ne: null, $lte: t } }));
      const rateLimits = await drainBatches(n, step(c.rates, { windowEnd: { $lte: t } }));
      const tombstones = await drainBatches(n, step(c.tombstones, { expiresAt: { $lte: t } }));
      const seenRequests = await drainBatches(n, step(c.seen, { expiresAt: { $lte: t } }));
      const consumedKeyPackages = await drainBatches(n, step(c.consumed, { expiresAt: { $lte: t } }));
      const prefixes = await this.#writeTx((session) => scale.purgePrefixes(scale.scaleCollections(c), session));
      return { historyEntries, keyPackages, rateLimits, tombstones, seenRequests, consumedKeyPackages, prefixes };
    });
  }

  // Issue 16 reads (scale-ops.ts).
  async feedSet(groupId: string): Promise<string | undefined> {
    return this.#read(() => scale.feedSetOf(scale.scaleCollections(this.#c), groupId));
  }

  async clientsVersion(): Promise<bigint> {
    return this.#read(() => scale.clientsVersionOf(scale.scaleCollections(this.#c)));
  }

  async trimQueues(prefix: string, trim: QueueTrim): Promise<number> {
    return this.#track(() => this.#writeTx((session) => hardening.trimQueues(hardening.hardeningCollections(this.#c), prefix, trim, session)));
  }

  async ping(): Promise<void> {
    await this.#read(async () => {
      await this.#client.db("admin").command({ ping: 1 });
    });
  }

  /**
   * New calls fail at once; the calls in flight get up to closeTimeoutMs to
   * finish (a commit that applied is reported as applied, as in SQLite), then
   * waits reject with StoreClosedError and the connection goes. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#inflight.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.allSettled([...this.#inflight]),
          new Promise<void>((r) => (timer = setTimeout(r, this.#o.closeTimeoutMs))),
        ]);
        clearTimeout(timer);
      }
      this.#notifier.close();
      await this.#watcher.close();
      await this.#client.close();
    })();
    return this.#closing;
  }
}

const big = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number));
const num = (v: unknown): number => Number(v as number);

function logEntryOf(d: Doc, value: (v: unknown) => Uint8Array): EpochLogEntry {
  return { epoch: big(d.epoch), entry: value(d.entry), createdAt: num(d.createdAt) };
}

function historyOf(d: Doc, value: (v: unknown) => Uint8Array): HistoryEntry {
  const joiners = ((d.joiners as Uint8Array[] | undefined) ?? []).map(copyBytes).sort((a, b) => Buffer.compare(a, b));
  return {
    groupId: String(d.groupId),
    epoch: big(d.epoch),
    ratchetTree: value(d.ratchetTree),
    groupInfo: value(d.groupInfo),
    joiners,
    expiresAt: num(d.expiresAt),
  };
}

/**
 * The sequence of the last of the first `limit` entries after `afterSeq` whose
 * payloads fit in `maxBytes` (the first one always does); undefined: none.
 */
async function lastSeqWithin(entries: Collection<Doc>, queue: QueueId, afterSeq: bigint, limit: number, maxBytes: number): Promise<bigint | undefined> {
  const sizes = await entries
    .aggregate<{ seq: unknown; size: number | null }>([
      { $match: { queue, seq: { $gt: afterSeq } } },
      { $sort: { seq: 1 } },
      { $limit: limit },
      { $project: { _id: 0, seq: 1, size: { $binarySize: "$payload" } } },
    ])
    .toArray();
  let total = 0;
  let last: bigint | undefined;
  for (const { seq, size } of sizes) {
    const n = Number(size ?? 0);
    if (last !== undefined && total + n > maxBytes) break;
    total += n;
    last = big(seq);
  }
  return last;
}
