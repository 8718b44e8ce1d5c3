// The scale-out adapter: MongoDB (a replica set or sharded cluster: the
// adapter needs multi-document transactions and change streams). Several DS
// instances share one database:
// - every apply is one transaction (snapshot read concern, majority write
//   concern): acknowledged means majority-committed;
// - the epoch CAS is an updateOne filtered on {_id, epoch: expected}: of N
//   concurrent commits one matches, the others hit a write conflict, are
//   retried by withTransaction and then see the new epoch -> EpochConflictError;
// - queue sequences come from a counter document ($inc in the transaction), so
//   they are gap-free (a rolled-back transaction rolls its $inc back);
// - KeyPackages are consumed with findOneAndDelete (one winner per document);
// - wake-ups: a change stream on the queue counters (any instance's appends),
//   falling back to polling the watched counters if the stream fails;
// - history entries also carry a Date for a TTL index (purgeExpired stays the
//   authoritative, immediate purge; TTL is the safety net).

import {
  MongoClient,
  MongoNetworkError,
  MongoServerSelectionError,
  MongoError,
  type ChangeStream,
  type ClientSession,
  type Collection,
  type Db,
  type Document,
} from "mongodb";
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
import { clientQueue, DEFAULT_FEED_PULL_LIMIT, groupFeed, type FeedMembership } from "../port.js";
// Issue 16 (guest feeds, shared entry prefixes, clients version): kept in its own module.
import * as scale from "./scale-ops.js";

export interface MongoStoreOptions {
  readonly uri: string;
  /** Database name (default: the URI's path, else "mimi_ds"). */
  readonly database?: string;
  /** Clock, for tests (default Date.now). */
  readonly now?: () => number;
  /** Polling interval of the wake-up fallback (default 250 ms). */
  readonly pollMs?: number;
  /** Use change streams for wake-ups (default true); false: poll only. */
  readonly changeStreams?: boolean;
}

// Untyped documents: the adapter owns its schema; the port types are the contract.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = { _id?: any; [key: string]: any };
const big = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number));
const num = (v: unknown): number => Number(v as number);
const bytes = (v: unknown): Uint8Array => plainBytes(v as Buffer | null);

/** Thrown inside a transaction to abort a duplicate batch; never escapes. */
class DuplicateBatch extends Error {}

/** Versioned schema (indexes); the version lives in meta/{_id: "schema"}. Append only. */
export const MONGO_MIGRATIONS: readonly { name: string; up: (db: Db) => Promise<void> }[] = [
  {
    name: "initial indexes",
    up: async (db) => {
      await db.collection("group_log").createIndex({ groupId: 1, epoch: 1 }, { unique: true });
      await db.collection("proposals").createIndex({ groupId: 1, ref: 1 }, { unique: true });
      await db.collection("proposals").createIndex({ groupId: 1, epoch: 1, order: 1 });
      await db.collection("history").createIndex({ groupId: 1, epoch: 1 }, { unique: true });
      await db.collection("history").createIndex({ groupId: 1, joiners: 1 });
      // TTL safety net; the grace keeps purgeExpired/expiry checks authoritative.
      await db.collection("history").createIndex({ expireAtDate: 1 }, { expireAfterSeconds: 3600 });
      await db.collection("fanout_tokens").createIndex({ groupId: 1, clientId: 1 }, { unique: true });
      await db.collection("key_packages").createIndex({ ref: 1 }, { unique: true });
      await db.collection("key_packages").createIndex({ clientId: 1, lastResort: 1, ciphersuite: 1, _id: 1 });
      await db.collection("key_packages").createIndex(
        { clientId: 1, ciphersuite: 1 },
        { unique: true, partialFilterExpression: { lastResort: true }, name: "one_last_resort" },
      );
      await db.collection("queue_entries").createIndex({ queue: 1, seq: 1 }, { unique: true });
      await db.collection("rate_limits").createIndex({ windowEnd: 1 });
    },
  },
  {
    name: "group feeds",
    up: async (db) => {
      await db.collection("feed_members").createIndex({ clientId: 1, groupId: 1 }, { unique: true });
      await db.collection("feed_members").createIndex({ groupId: 1, cursor: 1 });
    },
  },
  {
    name: "retained snapshots",
    up: async (db) => {
      await db.collection("retained_snapshots").createIndex({ groupId: 1, epoch: 1 }, { unique: true });
    },
  },
  scale.scaleMigration,
];

export async function openMongoStore(options: MongoStoreOptions): Promise<MongoStore> {
  const client = new MongoClient(options.uri, {
    useBigInt64: true,
    promoteBuffers: true,
    retryWrites: true,
    readPreference: "primary",
  });
  try {
    await client.connect();
    const db = client.db(options.database ?? (dbNameOf(options.uri) || "mimi_ds"));
    await migrateMongo(db);
    return new MongoStore(client, db, options);
  } catch (err) {
    await client.close().catch(() => undefined);
    throw translate(err);
  }
}

function dbNameOf(uri: string): string {
  const m = /^mongodb(?:\+srv)?:\/\/[^/]+\/([^?]*)/i.exec(uri);
  return m?.[1] ? decodeURIComponent(m[1]) : "";
}

export async function migrateMongo(db: Db): Promise<number> {
  const meta = db.collection<{ _id: string; version: number }>("meta");
  const doc = await meta.findOne({ _id: "schema" });
  const current = doc?.version ?? 0;
  if (current > MONGO_MIGRATIONS.length) {
    throw new StoreError(`database schema version ${current} is newer than this build supports (${MONGO_MIGRATIONS.length})`);
  }
  for (let v = current; v < MONGO_MIGRATIONS.length; v++) {
    // Index builds are idempotent, so a crash between a step and its version bump is harmless.
    await MONGO_MIGRATIONS[v]!.up(db);
    await meta.updateOne({ _id: "schema" }, { $set: { version: v + 1 } }, { upsert: true });
  }
  return MONGO_MIGRATIONS.length;
}

function translate(err: unknown): unknown {
  if (err instanceof StoreError) return err;
  if (err instanceof MongoServerSelectionError || err instanceof MongoNetworkError) {
    return new StoreUnavailableError(`mongodb: ${err.message}`, { cause: err });
  }
  if (err instanceof MongoError && (err.hasErrorLabel("TransientTransactionError") || err.hasErrorLabel("RetryableWriteError"))) {
    return new StoreUnavailableError(`mongodb: ${err.message}`, { cause: err });
  }
  if (err instanceof MongoError && /client (was|is) closed|Topology is closed/i.test(err.message)) return new StoreClosedError();
  return err;
}

export class MongoStore implements Store {
  readonly #client: MongoClient;
  readonly #now: () => number;
  readonly #notifier = new AppendNotifier();
  readonly #pollMs: number;
  readonly #useChangeStreams: boolean;
  readonly #c: {
    groups: Collection<Doc>;
    snapshots: Collection<Doc>;
    log: Collection<Doc>;
    proposals: Collection<Doc>;
    history: Collection<Doc>;
    tokens: Collection<Doc>;
    clients: Collection<Doc>;
    keyPackages: Collection<Doc>;
    queues: Collection<Doc>;
    entries: Collection<Doc>;
    feedMembers: Collection<Doc>;
    retained: Collection<Doc>;
    processed: Collection<Doc>;
    rates: Collection<Doc>;
  };
  readonly #scale: scale.ScaleCollections;
  readonly #prefixReader: scale.PrefixReader;
  #stream: ChangeStream | undefined;
  #poller: NodeJS.Timeout | undefined;
  readonly #polled = new Map<QueueId, bigint>();
  #closed = false;

  constructor(client: MongoClient, db: Db, options: MongoStoreOptions) {
    this.#client = client;
    this.#now = options.now ?? Date.now;
    this.#pollMs = options.pollMs ?? 250;
    this.#useChangeStreams = options.changeStreams ?? true;
    const c = (n: string) => db.collection<Doc>(n);
    this.#c = {
      groups: c("groups"),
      snapshots: c("group_snapshots"),
      log: c("group_log"),
      proposals: c("proposals"),
      history: c("history"),
      tokens: c("fanout_tokens"),
      clients: c("clients"),
      keyPackages: c("key_packages"),
      queues: c("queues"),
      entries: c("queue_entries"),
      feedMembers: c("feed_members"),
      retained: c("retained_snapshots"),
      processed: c("processed"),
      rates: c("rate_limits"),
    };
    this.#scale = scale.scaleCollections(db, this.#c.entries, this.#c.groups);
    this.#prefixReader = new scale.PrefixReader(this.#scale);
  }

  async #tx<T>(f: (session: ClientSession) => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreClosedError();
    const session = this.#client.startSession();
    try {
      return await session.withTransaction(f, {
        readConcern: { level: "snapshot" },
        writeConcern: { w: "majority" },
        readPreference: "primary",
      });
    } catch (err) {
      throw translate(err);
    } finally {
      await session.endSession();
    }
  }

  async #run<T>(f: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreClosedError();
    try {
      return await f();
    } catch (err) {
      throw translate(err);
    }
  }

  // -------------------------------------------------------------------------
  // apply

  async apply(batch: StoreWrite): Promise<AppliedWrite> {
    let out: { result: AppliedWrite; last: Map<QueueId, bigint> };
    try {
      out = await this.#tx((session) => this.#applyOps(batch.ops, session));
    } catch (err) {
      if (err instanceof DuplicateBatch) return { duplicate: true, appended: [], keyPackages: [], epochs: [] };
      throw err;
    }
    // Local waiters wake at once; other instances via the change stream.
    for (const [queue, last] of out.last) this.#notifier.notify(queue, last);
    return out.result;
  }

  async #applyOps(ops: readonly WriteOp[], session: ClientSession): Promise<{ result: AppliedWrite; last: Map<QueueId, bigint> }> {
    const c = this.#c;
    const o = { session };
    const now = this.#now();
    const appended: { queue: QueueId; seq: bigint }[] = [];
    const keyPackages: (StoredKeyPackage | undefined)[] = [];
    const epochs: { groupId: string; epoch: bigint }[] = [];
    const last = new Map<QueueId, bigint>();
    let pulled = 0;

    const currentEpoch = async (groupId: string): Promise<bigint> => {
      const g = await c.groups.findOne({ _id: groupId }, { ...o, projection: { epoch: 1 } });
      if (!g) throw new UnknownGroupError(groupId);
      return big(g.epoch);
    };
    // CAS: the write itself is filtered on the expected epoch, so concurrent writers conflict on this document.
    const casGroup = async (groupId: string, expected: bigint, set: Doc): Promise<void> => {
      checkUint63("expected epoch", expected);
      const r = await c.groups.updateOne({ _id: groupId, epoch: expected }, { $set: set }, o);
      if (r.matchedCount === 1) return;
      throw new EpochConflictError(groupId, expected, await currentEpoch(groupId));
    };
    const requireGroup = async (groupId: string): Promise<void> => {
      // Touch the group document so writes hanging off a group conflict with its deletion.
      const r = await c.groups.updateOne({ _id: groupId }, { $set: { touchedAt: now } }, o);
      if (r.matchedCount === 0) throw new UnknownGroupError(groupId);
    };

    for (const op of ops) {
      switch (op.kind) {
        case "createGroup": {
          checkUint63("epoch", op.epoch);
          if (await c.groups.findOne({ _id: op.groupId }, o)) throw new GroupExistsError(op.groupId);
          await c.groups.replaceOne(
            { _id: op.groupId },
            { epoch: op.epoch, metadata: op.metadata ?? null, proposalOrder: 0, createdAt: now, updatedAt: now },
            { ...o, upsert: true },
          );
          await c.snapshots.replaceOne({ _id: op.groupId }, { epoch: op.epoch, state: op.snapshot }, { ...o, upsert: true });
          break;
        }
        case "advanceGroup": {
          checkUint63("expected epoch", op.expectedEpoch);
          const next = checkUint63("epoch", op.expectedEpoch + 1n);
          await casGroup(op.groupId, op.expectedEpoch, {
            epoch: next,
            updatedAt: now,
            ...(op.metadata ? { metadata: op.metadata } : {}),
          });
          await c.log.insertOne({ groupId: op.groupId, epoch: next, entry: op.logEntry, createdAt: now }, o);
          if (op.snapshot) await this.#replaceSnapshot(op.groupId, next, op.snapshot, session);
          await c.proposals.deleteMany({ groupId: op.groupId, epoch: { $lt: next } }, o);
          await scale.sweepPrefixes(this.#scale, op.groupId, next, session);
          epochs.push({ groupId: op.groupId, epoch: next });
          break;
        }
        case "snapshotGroup":
          await casGroup(op.groupId, op.epoch, { updatedAt: now });
          await this.#replaceSnapshot(op.groupId, op.epoch, op.snapshot, session);
          break;
        case "setGroupMetadata":
          if (op.expectedEpoch !== undefined) await casGroup(op.groupId, op.expectedEpoch, { metadata: op.metadata, updatedAt: now });
          else {
            const r = await c.groups.updateOne({ _id: op.groupId }, { $set: { metadata: op.metadata, updatedAt: now } }, o);
            if (r.matchedCount === 0) throw new UnknownGroupError(op.groupId);
          }
          break;
        case "checkEpoch":
          // A write (not a read) so a concurrent commit of this epoch conflicts with this batch.
          await casGroup(op.groupId, op.epoch, { touchedAt: now });
          break;
        case "deleteGroup": {
          if (op.expectedEpoch !== undefined) await casGroup(op.groupId, op.expectedEpoch, { updatedAt: now });
          const r = await c.groups.deleteOne({ _id: op.groupId }, o);
          if (r.deletedCount === 0) throw new UnknownGroupError(op.groupId);
          await c.snapshots.deleteOne({ _id: op.groupId }, o);
          for (const coll of [c.log, c.proposals, c.history, c.tokens, c.retained]) await coll.deleteMany({ groupId: op.groupId }, o);
          await scale.sweepPrefixes(this.#scale, op.groupId, undefined, session);
          break;
        }
        case "addProposal": {
          checkUint63("epoch", op.epoch);
          const g = await c.groups.findOneAndUpdate(
            { _id: op.groupId },
            { $inc: { proposalOrder: 1 } },
            { ...o, returnDocument: "after", projection: { proposalOrder: 1 } },
          );
          if (!g) throw new UnknownGroupError(op.groupId);
          await c.proposals.updateOne(
            { groupId: op.groupId, ref: op.ref },
            { $setOnInsert: { epoch: op.epoch, proposal: op.proposal, order: num(g.proposalOrder) } },
            { ...o, upsert: true },
          );
          break;
        }
        case "removeProposal":
          await c.proposals.deleteOne({ groupId: op.groupId, ref: op.ref }, o);
          break;
        case "addHistory":
          checkUint63("epoch", op.epoch);
          await requireGroup(op.groupId);
          await c.history.replaceOne(
            { groupId: op.groupId, epoch: op.epoch },
            {
              groupId: op.groupId,
              epoch: op.epoch,
              ratchetTree: op.ratchetTree ?? new Uint8Array(),
              treeless: op.ratchetTree === undefined || op.ratchetTree.length === 0,
              groupInfo: op.groupInfo ?? null,
              joiners: dedupeRefs(op.joiners),
              expiresAt: op.expiresAt,
              expireAtDate: new Date(op.expiresAt),
            },
            { ...o, upsert: true },
          );
          break;
        case "removeHistoryJoiner": {
          const filter: Doc = { groupId: op.groupId, joiners: op.keyPackageRef };
          if (op.epoch !== undefined) filter.epoch = op.epoch;
          await c.history.updateMany(filter, { $pull: { joiners: op.keyPackageRef } as Doc }, o);
          await c.history.deleteMany({ groupId: op.groupId, joiners: { $size: 0 } }, o);
          break;
        }
        case "setFanoutToken":
          await requireGroup(op.groupId);
          await c.tokens.updateOne({ groupId: op.groupId, clientId: op.clientId }, { $set: { token: op.token } }, { ...o, upsert: true });
          break;
        case "removeFanoutToken":
          await c.tokens.deleteOne({ groupId: op.groupId, clientId: op.clientId }, o);
          break;
        case "putClient":
          await c.clients.updateOne(
            { _id: op.clientId },
            { $set: { sigKey: op.signaturePublicKey, authData: op.authData ?? null, updatedAt: now }, $setOnInsert: { createdAt: now } },
            { ...o, upsert: true },
          );
          await scale.bumpClientsVersion(this.#scale, session);
          break;
        case "removeClient":
          await c.clients.deleteOne({ _id: op.clientId }, o);
          await c.keyPackages.deleteMany({ clientId: op.clientId }, o);
          await scale.bumpClientsVersion(this.#scale, session);
          break;
        case "publishKeyPackages": {
          if (!(await c.clients.findOne({ _id: op.clientId }, o))) throw new UnknownClientError(op.clientId);
          const insert = async (kp: (typeof op.keyPackages)[number], lastResort: boolean) => {
            if (await c.keyPackages.findOne({ ref: kp.ref }, o)) throw new DuplicateKeyPackageError(kp.ref);
            await c.keyPackages.insertOne(
              {
                clientId: op.clientId,
                ciphersuite: kp.ciphersuite,
                ref: kp.ref,
                keyPackage: kp.keyPackage,
                lastResort,
                expiresAt: kp.expiresAt ?? null,
                createdAt: now,
              },
              o,
            );
          };
          for (const kp of op.keyPackages) await insert(kp, false);
          if (op.lastResort) {
            await c.keyPackages.deleteMany({ clientId: op.clientId, ciphersuite: op.lastResort.ciphersuite, lastResort: true }, o);
            await insert(op.lastResort, true);
          }
          break;
        }
        case "consumeKeyPackage": {
          const base: Doc = {
            clientId: op.clientId,
            $or: [{ expiresAt: null }, { expiresAt: { $gt: now } }],
            ...(op.ciphersuite !== undefined ? { ciphersuite: op.ciphersuite } : {}),
          };
          const regular = await c.keyPackages.findOneAndDelete({ ...base, lastResort: false }, { ...o, sort: { _id: 1 } });
          if (regular) keyPackages.push(keyPackageOf(regular));
          else {
            const lr = await c.keyPackages.findOne({ ...base, lastResort: true }, { ...o, sort: { _id: 1 } });
            keyPackages.push(lr ? keyPackageOf(lr) : undefined);
          }
          break;
        }
        case "deleteKeyPackages":
          if (op.refs) for (const ref of op.refs) await c.keyPackages.deleteOne({ clientId: op.clientId, ref }, o);
          else await c.keyPackages.deleteMany({ clientId: op.clientId }, o);
          break;
        case "append": {
          const q = await c.queues.findOneAndUpdate(
            { _id: op.queue },
            { $inc: { lastSeq: 1n } },
            { ...o, upsert: true, returnDocument: "after" },
          );
          const seq = big(q!.lastSeq);
          const except = op.except !== undefined && op.except.length > 0 ? { except: [...op.except] } : {};
          if (op.prefix !== undefined && op.queue.startsWith("feed:")) throw new StoreError(`append to ${op.queue}: group feed entries take no prefix`);
          const prefix = op.prefix !== undefined ? { prefixId: await scale.putPrefix(this.#scale, op.prefix, session) } : {};
          await c.entries.insertOne({ queue: op.queue, seq, payload: op.payload, enqueuedAt: now, ...except, ...prefix }, o);
          appended.push({ queue: op.queue, seq });
          last.set(op.queue, seq);
          break;
        }
        case "joinFeed": {
          const member = await c.feedMembers.findOne({ clientId: op.clientId, groupId: op.groupId }, o);
          if (member && member.until == null) break; // already receiving it
          // Left earlier with entries still pending: they go to its queue before the new membership starts.
          if (member) pulled += await this.#pullFeed(op.clientId, member, Number.MAX_SAFE_INTEGER, now, session, last);
          await c.feedMembers.updateOne(
            { clientId: op.clientId, groupId: op.groupId },
            { $set: { cursor: await this.#feedHead(op.groupId, session), until: null } },
            { ...o, upsert: true },
          );
          // The client's readers (on any instance: the change stream sees the counter) hear of it without an append.
          const own = await c.queues.findOneAndUpdate(
            { _id: clientQueue(op.clientId) },
            { $setOnInsert: { lastSeq: 0n }, $set: { touchedAt: now } },
            { ...o, upsert: true, returnDocument: "after" },
          );
          last.set(clientQueue(op.clientId), big(own!.lastSeq));
          break;
        }
        case "leaveFeed": {
          const head = await this.#feedHead(op.groupId, session);
          const who: Doc = op.clientId !== undefined ? { clientId: op.clientId } : {};
          await c.feedMembers.updateMany({ groupId: op.groupId, until: null, ...who }, { $set: { until: head } }, o);
          await c.feedMembers.deleteMany({ groupId: op.groupId, until: { $ne: null }, $expr: { $gte: ["$cursor", "$until"] } }, o);
          await this.#trimFeed(op.groupId, session);
          break;
        }
        case "pullFeeds": {
          let budget = Math.max(1, Math.floor(op.limit ?? DEFAULT_FEED_PULL_LIMIT));
          for (const member of await c.feedMembers.find({ clientId: op.clientId }, { ...o, sort: { groupId: 1 } }).toArray()) {
            if (budget <= 0) break;
            const n = await this.#pullFeed(op.clientId, member, budget, now, session, last);
            pulled += n;
            budget -= n;
          }
          break;
        }
        case "setFeedSet":
          await scale.setFeedSet(this.#scale, op, session);
          break;
        case "ack":
          await c.entries.deleteMany({ queue: op.queue, seq: { $lte: checkUint63("seq", op.uptoSeq) } }, o);
          break;
        case "deleteQueue":
          await c.entries.deleteMany({ queue: op.queue }, o);
          await c.queues.deleteOne({ _id: op.queue }, o);
          last.delete(op.queue);
          break;
        case "markProcessed": {
          checkUint63("sequence", op.sequence);
          const p = await c.processed.findOne({ _id: op.source }, o);
          if (p && op.sequence <= big(p.lastSeq)) throw new DuplicateBatch();
          await c.processed.updateOne({ _id: op.source }, { $set: { lastSeq: op.sequence } }, { ...o, upsert: true });
          break;
        }
        default: {
          const never: never = op;
          throw new StoreError(`unknown write op ${(never as { kind: string }).kind}`);
        }
      }
    }
    return { result: { duplicate: false, appended, keyPackages, epochs, ...(pulled > 0 ? { pulled } : {}) }, last };
  }

  /** As in the SQLite adapter: replace the latest snapshot, keeping what treeless history entries need. */
  async #replaceSnapshot(groupId: string, epoch: bigint, state: Uint8Array, session: ClientSession): Promise<void> {
    const c = this.#c;
    const o = { session };
    const oldest = await c.history.findOne({ groupId, treeless: true }, { ...o, sort: { epoch: 1 }, projection: { epoch: 1 } });
    if (oldest && big(oldest.epoch) < epoch) {
      const old = await c.snapshots.findOne({ _id: groupId }, o);
      if (old) await c.retained.updateOne({ groupId, epoch: big(old.epoch) }, { $setOnInsert: { state: old.state } }, { ...o, upsert: true });
      const from = await c.retained.findOne({ groupId, epoch: { $lte: big(oldest.epoch) } }, { ...o, sort: { epoch: -1 }, projection: { epoch: 1 } });
      if (from) {
        await c.retained.deleteMany({ groupId, epoch: { $lt: big(from.epoch) } }, o);
        await c.log.deleteMany({ groupId, epoch: { $lte: big(from.epoch) } }, o);
      }
    } else {
      await c.retained.deleteMany({ groupId, epoch: { $lt: epoch } }, o);
      await c.log.deleteMany({ groupId, epoch: { $lte: epoch } }, o);
    }
    await c.snapshots.replaceOne({ _id: groupId }, { epoch, state }, { ...o, upsert: true });
  }

  async #feedHead(groupId: string, session: ClientSession): Promise<bigint> {
    const q = await this.#c.queues.findOne({ _id: groupFeed(groupId) }, { session });
    return q ? big(q.lastSeq) : 0n;
  }

  /** As in the SQLite adapter: copy up to `budget` entries of one membership into the client's queue. */
  async #pullFeed(clientId: string, member: Doc, budget: number, now: number, session: ClientSession, last: Map<QueueId, bigint>): Promise<number> {
    const c = this.#c;
    const o = { session };
    const groupId = String(member.groupId);
    const end = member.until == null ? await this.#feedHead(groupId, session) : big(member.until);
    let cursor = big(member.cursor);
    const key = { clientId, groupId };
    if (cursor >= end) {
      if (member.until != null) await c.feedMembers.deleteOne(key, o);
      return 0;
    }
    const queue = clientQueue(clientId);
    const rows = await c.entries
      .find({ queue: groupFeed(groupId), seq: { $gt: cursor, $lte: end } }, { ...o, sort: { seq: 1 }, limit: budget })
      .toArray();
    let copied = 0;
    for (const e of rows) {
      cursor = big(e.seq);
      if (Array.isArray(e.except) && e.except.includes(clientId)) continue;
      const q = await c.queues.findOneAndUpdate({ _id: queue }, { $inc: { lastSeq: 1n } }, { ...o, upsert: true, returnDocument: "after" });
      const seq = big(q!.lastSeq);
      await c.entries.insertOne({ queue, seq, payload: e.payload, enqueuedAt: now }, o);
      last.set(queue, seq);
      copied++;
    }
    if (rows.length < budget) cursor = end;
    if (member.until != null && cursor >= end) await c.feedMembers.deleteOne(key, o);
    else await c.feedMembers.updateOne(key, { $set: { cursor } }, o);
    await this.#trimFeed(groupId, session);
    return copied;
  }

  /** Drop feed entries every member has passed (all of them when no one receives the feed). */
  async #trimFeed(groupId: string, session: ClientSession): Promise<void> {
    const low = await this.#c.feedMembers.findOne({ groupId }, { session, sort: { cursor: 1 }, projection: { cursor: 1 } });
    const upto = low ? big(low.cursor) : await this.#feedHead(groupId, session);
    await this.#c.entries.deleteMany({ queue: groupFeed(groupId), seq: { $lte: upto } }, { session });
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
    return this.#tx(async (session) => {
      const o = { session };
      const g = await this.#c.groups.findOne({ _id: groupId }, o);
      if (!g) return undefined;
      const epoch = at ?? big(g.epoch);
      if (epoch > big(g.epoch)) return undefined;
      const latest = (await this.#c.snapshots.findOne({ _id: groupId }, o))!;
      const snap =
        big(latest.epoch) <= epoch ? latest : await this.#c.retained.findOne({ groupId, epoch: { $lte: epoch } }, { ...o, sort: { epoch: -1 } });
      if (!snap) return undefined;
      const snapEpoch = big(snap.epoch);
      const log = (await this.#c.log.find({ groupId, epoch: { $gt: snapEpoch, $lte: epoch } }, { ...o, sort: { epoch: 1 } }).toArray()).map(logEntryOf);
      if (at !== undefined && BigInt(log.length) !== epoch - snapEpoch) return undefined; // the log no longer reaches back
      return {
        groupId,
        epoch,
        snapshot: { epoch: snapEpoch, state: bytes(snap.state) },
        log,
        metadata: bytes(g.metadata),
        createdAt: num(g.createdAt),
        updatedAt: num(g.updatedAt),
      };
    });
  }

  async groupEpoch(groupId: string): Promise<bigint | undefined> {
    return this.#run(async () => {
      const g = await this.#c.groups.findOne({ _id: groupId }, { projection: { epoch: 1 } });
      return g ? big(g.epoch) : undefined;
    });
  }

  async readGroupLog(groupId: string, afterEpoch: bigint): Promise<readonly EpochLogEntry[] | undefined> {
    checkUint63("epoch", afterEpoch);
    return this.#tx(async (session) => {
      const snap = await this.#c.snapshots.findOne({ _id: groupId }, { session, projection: { epoch: 1 } });
      if (!snap || afterEpoch < big(snap.epoch)) return undefined;
      return (await this.#c.log.find({ groupId, epoch: { $gt: afterEpoch } }, { session, sort: { epoch: 1 } }).toArray()).map(logEntryOf);
    });
  }

  async listGroups(opts?: { after?: string; limit?: number }): Promise<string[]> {
    return this.#run(async () => {
      const filter = opts?.after !== undefined ? { _id: { $gt: opts.after } } : {};
      const cursor = this.#c.groups.find(filter, { projection: { _id: 1 }, sort: { _id: 1 } });
      if (opts?.limit !== undefined) {
        if (opts.limit <= 0) return []; // Mongo's limit(0) means "no limit"
        cursor.limit(opts.limit);
      }
      return (await cursor.toArray()).map((d) => String(d._id));
    });
  }

  async listProposals(groupId: string, epoch: bigint): Promise<StoredProposal[]> {
    checkUint63("epoch", epoch);
    return this.#run(async () =>
      (await this.#c.proposals.find({ groupId, epoch }, { sort: { order: 1 } }).toArray()).map((d) => ({
        epoch: big(d.epoch),
        ref: bytes(d.ref),
        proposal: bytes(d.proposal),
      })),
    );
  }

  async listHistory(groupId: string, now?: number): Promise<HistoryEntry[]> {
    const t = now ?? this.#now();
    return this.#run(async () =>
      (await this.#c.history.find({ groupId, expiresAt: { $gt: t } }, { sort: { epoch: 1 } }).toArray()).map(historyOf),
    );
  }

  async historyForJoiner(groupId: string, keyPackageRef: Uint8Array, now?: number): Promise<HistoryEntry | undefined> {
    const t = now ?? this.#now();
    return this.#run(async () => {
      const d = await this.#c.history.findOne({ groupId, joiners: keyPackageRef, expiresAt: { $gt: t } }, { sort: { epoch: -1 } });
      return d ? historyOf(d) : undefined;
    });
  }

  async fanoutTokens(groupId: string): Promise<Map<string, Uint8Array>> {
    return this.#run(async () => {
      const docs = await this.#c.tokens.find({ groupId }, { sort: { clientId: 1 } }).toArray();
      return new Map(docs.map((d) => [String(d.clientId), bytes(d.token)]));
    });
  }

  async fanoutToken(groupId: string, clientId: string): Promise<Uint8Array | undefined> {
    return this.#run(async () => {
      const d = await this.#c.tokens.findOne({ groupId, clientId });
      return d ? bytes(d.token) : undefined;
    });
  }

  async getClient(clientId: string): Promise<ClientRecord | undefined> {
    return this.#run(async () => {
      const d = await this.#c.clients.findOne({ _id: clientId });
      if (!d) return undefined;
      return {
        clientId,
        signaturePublicKey: bytes(d.sigKey),
        authData: bytes(d.authData),
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
    return this.#run(() =>
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

  async read(queue: QueueId, afterSeq: bigint, limit: number): Promise<QueueEntry[]> {
    checkUint63("seq", afterSeq);
    const n = Math.max(0, Math.floor(limit));
    if (n === 0) return this.#run(async () => []);
    return this.#run(async () => {
      const docs = await this.#c.entries.find({ queue, seq: { $gt: afterSeq } }, { sort: { seq: 1 }, limit: n }).toArray();
      const payloads = await this.#prefixReader.payloads(docs);
      return docs.map((d, i) => ({ seq: big(d.seq), payload: payloads[i]!, enqueuedAt: num(d.enqueuedAt) }));
    });
  }

  async ack(queue: QueueId, uptoSeq: bigint): Promise<number> {
    checkUint63("seq", uptoSeq);
    return this.#run(async () => (await this.#c.entries.deleteMany({ queue, seq: { $lte: uptoSeq } })).deletedCount);
  }

  async queueInfo(queue: QueueId): Promise<QueueInfo> {
    return this.#tx(async (session) => {
      const head = await this.#c.queues.findOne({ _id: queue }, { session });
      const first = await this.#c.entries.findOne({ queue }, { session, sort: { seq: 1 }, projection: { seq: 1 } });
      const length = await this.#c.entries.countDocuments({ queue }, { session });
      return { lastSeq: head ? big(head.lastSeq) : 0n, firstSeq: first ? big(first.seq) : undefined, length };
    });
  }

  async feedMemberships(clientId: string): Promise<FeedMembership[]> {
    return this.#run(async () => {
      const rows = await this.#c.feedMembers.find({ clientId }, { sort: { groupId: 1 } }).toArray();
      const heads = await this.#c.queues.find({ _id: { $in: rows.map((r) => groupFeed(String(r.groupId))) } }).toArray();
      const headOf = new Map(heads.map((q) => [String(q._id), big(q.lastSeq)]));
      return rows.map((r) => ({
        groupId: String(r.groupId),
        head: headOf.get(groupFeed(String(r.groupId))) ?? 0n,
        cursor: big(r.cursor),
        ...(r.until == null ? {} : { until: big(r.until) }),
      }));
    });
  }

  async feedMembers(groupId: string): Promise<string[]> {
    return this.#run(async () =>
      (await this.#c.feedMembers.find({ groupId, until: null }, { sort: { clientId: 1 }, projection: { clientId: 1 } }).toArray()).map((r) => String(r.clientId)),
    );
  }

  subscribe(queue: QueueId, listener: AppendListener): Unsubscribe {
    if (this.#closed) throw new StoreClosedError();
    const unsub = this.#notifier.subscribe(queue, listener);
    this.#ensureWatching();
    return unsub;
  }

  waitForAppend(queue: QueueId, afterSeq: bigint, signal?: AbortSignal): Promise<bigint> {
    const p = this.#notifier.waitFor(queue, afterSeq, async () => (await this.queueInfo(queue)).lastSeq, signal);
    if (!this.#closed) this.#ensureWatching();
    return p;
  }

  /** Start the change stream (or the poller) once something listens. */
  #ensureWatching(): void {
    if (this.#closed || this.#stream || this.#poller) return;
    if (!this.#useChangeStreams) return this.#startPolling();
    try {
      const stream = this.#c.queues.watch([{ $match: { operationType: { $in: ["insert", "update", "replace"] } } }], {
        fullDocument: "updateLookup",
      });
      stream.on("change", (ev: Document) => {
        const id = ev.documentKey?._id as string | undefined;
        const seq = ev.fullDocument?.lastSeq ?? ev.updateDescription?.updatedFields?.lastSeq;
        if (id !== undefined && seq !== undefined) this.#notifier.notify(id, big(seq));
      });
      stream.on("error", () => {
        // E.g. a standalone server without change streams: degrade to polling.
        if (this.#stream === stream) this.#stream = undefined;
        void stream.close().catch(() => undefined);
        this.#startPolling();
      });
      this.#stream = stream;
    } catch {
      this.#startPolling();
    }
  }

  #startPolling(): void {
    if (this.#closed || this.#poller) return;
    this.#poller = setInterval(() => void this.#poll(), this.#pollMs);
    this.#poller.unref();
  }

  async #poll(): Promise<void> {
    const watched = this.#notifier.watchedQueues();
    if (watched.length === 0 || this.#closed) return;
    try {
      const docs = await this.#c.queues.find({ _id: { $in: watched } }).toArray();
      for (const d of docs) {
        const id = String(d._id);
        const seq = big(d.lastSeq);
        if (this.#polled.get(id) !== seq) {
          this.#polled.set(id, seq);
          this.#notifier.notify(id, seq);
        }
      }
    } catch {
      // Next tick retries; waiters are not failed by a transient outage.
    }
  }

  // -------------------------------------------------------------------------
  // at-most-once, rate limits, maintenance

  async isProcessed(source: string, sequence: bigint): Promise<boolean> {
    return this.#run(async () => {
      const p = await this.#c.processed.findOne({ _id: source });
      return p !== null && sequence <= big(p.lastSeq);
    });
  }

  async rateLimit(key: string, rule: RateLimitRule, now?: number): Promise<RateLimitResult> {
    const t = now ?? this.#now();
    const w = rateWindow(rule, t);
    return this.#tx(async (session) => {
      const row = await this.#c.rates.findOne({ _id: key }, { session });
      const sameWindow = row !== null && num(row.windowStart) === w.start;
      const used = sameWindow ? num(row.count) : 0;
      const allowed = used + w.cost <= rule.limit;
      const count = allowed ? used + w.cost : used;
      await this.#c.rates.updateOne(
        { _id: key },
        { $set: { windowStart: w.start, windowEnd: w.end, count } },
        { session, upsert: true },
      );
      return { allowed, count, remaining: Math.max(0, rule.limit - count), resetAt: w.end };
    });
  }

  async purgeExpired(now?: number): Promise<PurgeResult> {
    const t = now ?? this.#now();
    return this.#tx(async (session) => {
      const historyEntries = (await this.#c.history.deleteMany({ expiresAt: { $lte: t } }, { session })).deletedCount;
      const keyPackages = (await this.#c.keyPackages.deleteMany({ expiresAt: { $ne: null, $lte: t } }, { session })).deletedCount;
      const rateLimits = (await this.#c.rates.deleteMany({ windowEnd: { $lte: t } }, { session })).deletedCount;
      const prefixes = await scale.purgePrefixes(this.#scale, session);
      return { historyEntries, keyPackages, rateLimits, prefixes };
    });
  }

  // Issue 16 reads (scale-ops.ts).
  async feedSet(groupId: string): Promise<string | undefined> {
    return this.#run(() => scale.feedSetOf(this.#scale, groupId));
  }

  async clientsVersion(): Promise<bigint> {
    return this.#run(() => scale.clientsVersionOf(this.#scale));
  }

  async ping(): Promise<void> {
    await this.#run(async () => {
      await this.#client.db("admin").command({ ping: 1 });
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#notifier.close();
    if (this.#poller) clearInterval(this.#poller);
    await this.#stream?.close().catch(() => undefined);
    await this.#client.close();
  }
}

function dedupeRefs(refs: readonly Uint8Array[]): Uint8Array[] {
  const seen = new Set<string>();
  return refs.filter((r) => {
    const k = Buffer.from(r).toString("hex");
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function logEntryOf(d: Doc): EpochLogEntry {
  return { epoch: big(d.epoch), entry: bytes(d.entry), createdAt: num(d.createdAt) };
}

function historyOf(d: Doc): HistoryEntry {
  const joiners = ((d.joiners as Buffer[] | undefined) ?? []).map(bytes).sort((a, b) => Buffer.compare(a, b));
  return {
    groupId: String(d.groupId),
    epoch: big(d.epoch),
    ratchetTree: bytes(d.ratchetTree),
    groupInfo: bytes(d.groupInfo),
    joiners,
    expiresAt: num(d.expiresAt),
  };
}

function keyPackageOf(d: Doc): StoredKeyPackage {
  const base = {
    clientId: String(d.clientId),
    ref: bytes(d.ref),
    ciphersuite: num(d.ciphersuite),
    keyPackage: bytes(d.keyPackage),
    lastResort: d.lastResort === true,
  };
  return d.expiresAt == null ? base : { ...base, expiresAt: num(d.expiresAt) };
}
