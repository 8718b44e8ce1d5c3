// One `apply` batch inside one MongoDB transaction: a switch on the op kind,
// one method per op (a new op is one case and one method). Runs again from
// the start when withTransaction retries after a write conflict, so it keeps
// no state outside the instance made for the attempt.
//
// Writes that exist only to conflict (an epoch check, "the group must exist")
// must really write: `$inc: {v: 1}` on the group, a fresh stamp on a queue
// counter. A `$set` of an unchanged value is a no-op that conflicts with nothing.

import * as hardening from "./harden-ds.js";
import * as scale from "./scale-ops.js";
import type { ClientSession, Document } from "mongodb";
import { checkUint63 } from "../common.js";
import {
  ConsumedKeyPackageError,
  DuplicateKeyPackageError,
  EpochConflictError,
  KeyPackageQuotaError,
  GroupExistsError,
  StoreError,
  UnknownClientError,
  UnknownGroupError,
} from "../errors.js";
import {
  clientQueue,
  CONSUMED_KEY_PACKAGE_RETENTION_MS,
  DEFAULT_FEED_PULL_LIMIT,
  groupFeed,
  type AckOp,
  type AddHistoryOp,
  type AddProposalOp,
  type AdvanceGroupOp,
  type AppendOp,
  type AppliedWrite,
  type CheckEpochOp,
  type ConsumeKeyPackageOp,
  type CreateGroupOp,
  type DeleteGroupOp,
  type DeleteKeyPackagesOp,
  type DeleteQueueOp,
  type JoinFeedOp,
  type LeaveFeedOp,
  type MarkProcessedOp,
  type PublishKeyPackagesOp,
  type PullFeedsOp,
  type PutClientOp,
  type QueueId,
  type RemoveClientOp,
  type RemoveFanoutTokenOp,
  type RemoveHistoryJoinerOp,
  type RemoveProposalOp,
  type SetFanoutTokenOp,
  type SetGroupMetadataOp,
  type SnapshotGroupOp,
  type StoredKeyPackage,
  type WriteOp,
} from "../port.js";
import { blobIdsOf, encodeBlob, type BlobLimits, type BlobRef } from "./blobs.js";
import { historyDoc, keyPackageDocs, keyPackageOf, membershipDoc, membershipOf } from "./documents.js";
import { finished, pullMembership, rejoin, type FeedRange, type Membership } from "./feeds.js";
import type { Collections, Doc } from "./schema.js";
import { checkValueSize, MAX_FIND_LIMIT, pageSize, ttlDate } from "./values.js";

/** Thrown inside a transaction to abort a duplicate batch; never escapes the store. */
export class DuplicateBatch extends Error {}

/** Most feed rows one read fetches. */
const FEED_PAGE = 1000;

export interface ApplyContext {
  readonly c: Collections;
  readonly session: ClientSession;
  /** The store's clock (stored times). */
  readonly now: number;
  /** The real clock (TTL dates are compared with the server's clock). */
  readonly wallNow: number;
  /** A stamp for one queue-counter write, unique across instances (wakeups.ts). */
  readonly nextStamp: () => string;
  /** A fresh id for a chunked value. */
  readonly newBlobId: () => string;
  readonly blobLimits: BlobLimits;
  /** Most pending entries a re-join copies in its own transaction (the rest stays pending). */
  readonly joinPullLimit: number;
  /** Most payload bytes one pull copies in one transaction. */
  readonly pullBytes: number;
}

/** A queue-counter write of the batch: its last sequence (notified after commit). */
export type LastSeqs = Map<QueueId, bigint>;

export interface BatchOutcome {
  readonly result: AppliedWrite;
  readonly last: LastSeqs;
}

export class BatchApplier {
  readonly #x: ApplyContext;
  readonly #o: { session: ClientSession };
  readonly #appended: { queue: QueueId; seq: bigint }[] = [];
  readonly #keyPackages: (StoredKeyPackage | undefined)[] = [];
  readonly #epochs: { groupId: string; epoch: bigint }[] = [];
  readonly #last: LastSeqs = new Map();
  #pulled = 0;
  #acked = 0;

  constructor(ctx: ApplyContext) {
    this.#x = ctx;
    this.#o = { session: ctx.session };
  }

  async run(ops: readonly WriteOp[]): Promise<BatchOutcome> {
    for (const op of ops) await this.#op(op);
    const result: AppliedWrite = {
      duplicate: false,
      appended: this.#appended,
      keyPackages: this.#keyPackages,
      epochs: this.#epochs,
      ...(this.#pulled > 0 ? { pulled: this.#pulled } : {}),
      ...(this.#acked > 0 ? { acked: this.#acked } : {}),
    };
    return { result, last: this.#last };
  }

  async #op(op: WriteOp): Promise<void> {
    switch (op.kind) {
      case "createGroup":
        return this.#createGroup(op);
      case "advanceGroup":
        return this.#advanceGroup(op);
      case "snapshotGroup":
        return this.#snapshotGroup(op);
      case "setGroupMetadata":
        return this.#setGroupMetadata(op);
      case "checkEpoch":
        return this.#checkEpoch(op);
      case "deleteGroup":
        return this.#deleteGroup(op);
      case "addProposal":
        return this.#addProposal(op);
      case "removeProposal":
        return this.#removeProposal(op);
      case "addHistory":
        return this.#addHistory(op);
      case "removeHistoryJoiner":
        return this.#removeHistoryJoiner(op);
      case "setFanoutToken":
        return this.#setFanoutToken(op);
      case "removeFanoutToken":
        return this.#removeFanoutToken(op);
      case "putClient":
        return this.#putClient(op);
      case "removeClient":
        return this.#removeClient(op);
      case "publishKeyPackages":
        return this.#publishKeyPackages(op);
      case "consumeKeyPackage":
        return this.#consumeKeyPackage(op);
      case "deleteKeyPackages":
        return this.#deleteKeyPackages(op);
      case "append":
        return this.#append(op);
      case "joinFeed":
        return this.#joinFeed(op);
      case "leaveFeed":
        return this.#leaveFeed(op);
      case "pullFeeds":
        return this.#pullFeeds(op);
      case "ack":
        return this.#ack(op);
      case "deleteQueue":
        return this.#deleteQueue(op);
      case "markProcessed":
        return this.#markProcessed(op);
      case "setFeedSet":
        return scale.setFeedSet(scale.scaleCollections(this.#x.c), op, this.#x.session);
      case "recordRequest":
        if (await hardening.recordRequest(hardening.hardeningCollections(this.#x.c), op, this.#x.now, this.#x.session)) throw new DuplicateBatch();
        return;
      default: {
        const never: never = op;
        throw new StoreError(`unknown write op ${(never as { kind: string }).kind}`);
      }
    }
  }

  // -------------------------------------------------------------------------
  // groups

  async #createGroup(op: CreateGroupOp): Promise<void> {
    const { c, now } = this.#x;
    checkUint63("epoch", op.epoch);
    if (await c.groups.findOne({ _id: op.groupId }, { ...this.#o, projection: { _id: 1 } })) throw new GroupExistsError(op.groupId);
    const tomb = await c.tombstones.findOne({ _id: op.groupId }, { ...this.#o, projection: { expiresAt: 1 } });
    if (tomb && Number(tomb.expiresAt) > now) throw new GroupExistsError(op.groupId, true);
    await hardening.checkOwner(hardening.hardeningCollections(c), op, now, this.#x.session);
    await c.groups.insertOne(
      { _id: op.groupId, epoch: op.epoch, metadata: op.metadata ?? null, proposalOrder: 0, v: 0, createdAt: now, updatedAt: now, ...hardening.ownerFields(op) } as Doc,
      this.#o,
    );
    await this.#writeSnapshot(op.groupId, op.epoch, op.snapshot);
  }

  async #advanceGroup(op: AdvanceGroupOp): Promise<void> {
    const { c, now } = this.#x;
    checkUint63("expected epoch", op.expectedEpoch);
    const next = checkUint63("epoch", op.expectedEpoch + 1n);
    await this.#casGroup(op.groupId, op.expectedEpoch, { epoch: next, updatedAt: now, ...(op.metadata ? { metadata: op.metadata } : {}) });
    const entry = await this.#putBlob(op.logEntry, op.groupId);
    await c.log.insertOne({ groupId: op.groupId, epoch: next, entry, createdAt: now }, this.#o);
    if (op.snapshot) await this.#replaceSnapshot(op.groupId, next, op.snapshot);
    await scale.sweepPrefixes(scale.scaleCollections(c), op.groupId, next, this.#x.session);
    await c.proposals.deleteMany({ groupId: op.groupId, epoch: { $lt: next } }, this.#o);
    this.#epochs.push({ groupId: op.groupId, epoch: next });
  }

  /** Compaction does not change the group's updatedAt (as in SQLite); the CAS still writes the group. */
  async #snapshotGroup(op: SnapshotGroupOp): Promise<void> {
    await this.#casGroup(op.groupId, op.epoch, {});
    await this.#replaceSnapshot(op.groupId, op.epoch, op.snapshot);
  }

  async #setGroupMetadata(op: SetGroupMetadataOp): Promise<void> {
    const set = { metadata: checkValueSize("metadata", op.metadata), updatedAt: this.#x.now };
    if (op.expectedEpoch !== undefined) return this.#casGroup(op.groupId, op.expectedEpoch, set);
    const r = await this.#x.c.groups.updateOne({ _id: op.groupId }, { $set: set, $inc: { v: 1 } }, this.#o);
    if (r.matchedCount === 0) throw new UnknownGroupError(op.groupId);
  }

  /** A write (not a read), so a concurrent commit of this epoch conflicts with this batch. */
  async #checkEpoch(op: CheckEpochOp): Promise<void> {
    await this.#casGroup(op.groupId, op.epoch, {});
  }

  async #deleteGroup(op: DeleteGroupOp): Promise<void> {
    const { c } = this.#x;
    if (op.expectedEpoch !== undefined) await this.#casGroup(op.groupId, op.expectedEpoch, {});
    const r = await c.groups.deleteOne({ _id: op.groupId }, this.#o);
    if (r.deletedCount === 0) throw new UnknownGroupError(op.groupId);
    await c.snapshots.deleteOne({ _id: op.groupId }, this.#o);
    for (const coll of [c.log, c.proposals, c.history, c.tokens, c.retained, c.chunks]) {
      await coll.deleteMany(coll === c.chunks ? { g: op.groupId } : { groupId: op.groupId }, this.#o);
    }
    await hardening.deleteGroupRecords(hardening.hardeningCollections(c), op.groupId, this.#x.session);
    await scale.sweepPrefixes(scale.scaleCollections(c), op.groupId, undefined, this.#x.session);
    if (op.tombstoneUntil !== undefined)
      await c.tombstones.replaceOne({ _id: op.groupId }, { deletedAt: this.#x.now, expiresAt: op.tombstoneUntil }, { ...this.#o, upsert: true });
  }

  async #addProposal(op: AddProposalOp): Promise<void> {
    const { c } = this.#x;
    checkUint63("epoch", op.epoch);
    checkValueSize("proposal", op.proposal);
    const g = await c.groups.findOneAndUpdate(
      { _id: op.groupId },
      { $inc: { proposalOrder: 1 } },
      { ...this.#o, returnDocument: "after", projection: { proposalOrder: 1 } },
    );
    if (!g) throw new UnknownGroupError(op.groupId);
    await c.proposals.updateOne(
      { groupId: op.groupId, ref: op.ref },
      { $setOnInsert: { epoch: op.epoch, proposal: op.proposal, order: Number(g.proposalOrder), createdAt: this.#x.now } },
      { ...this.#o, upsert: true },
    );
  }

  async #removeProposal(op: RemoveProposalOp): Promise<void> {
    await this.#x.c.proposals.deleteOne({ groupId: op.groupId, ref: op.ref }, this.#o);
  }

  async #addHistory(op: AddHistoryOp): Promise<void> {
    const { c } = this.#x;
    checkUint63("epoch", op.epoch);
    await this.#requireGroup(op.groupId);
    const old = await c.history.findOne({ groupId: op.groupId, epoch: op.epoch }, { ...this.#o, projection: { ratchetTree: 1, groupInfo: 1 } });
    if (old) await this.#dropBlobs([old.ratchetTree, old.groupInfo]);
    const tree = op.ratchetTree ?? new Uint8Array();
    const doc = historyDoc(
      op.groupId,
      op.epoch,
      await this.#putBlob(tree, op.groupId),
      tree.byteLength === 0,
      op.groupInfo ? await this.#putBlob(op.groupInfo, op.groupId) : null,
      dedupeRefs(op.joiners),
      op.expiresAt,
      ttlDate(op.expiresAt, this.#x.wallNow),
    );
    await c.history.replaceOne({ groupId: op.groupId, epoch: op.epoch }, doc, { ...this.#o, upsert: true });
  }

  async #removeHistoryJoiner(op: RemoveHistoryJoinerOp): Promise<void> {
    const { c } = this.#x;
    const filter: Doc = { groupId: op.groupId, joiners: op.keyPackageRef };
    if (op.epoch !== undefined) filter.epoch = checkUint63("epoch", op.epoch);
    await c.history.updateMany(filter, { $pull: { joiners: op.keyPackageRef } as Document }, this.#o);
    const empty = await c.history.find({ groupId: op.groupId, joiners: { $size: 0 } }, { ...this.#o, projection: { ratchetTree: 1, groupInfo: 1 } }).toArray();
    if (empty.length === 0) return;
    await c.history.deleteMany({ _id: { $in: empty.map((d) => d._id) } }, this.#o);
    await this.#dropBlobs(empty.flatMap((d) => [d.ratchetTree, d.groupInfo]));
  }

  async #setFanoutToken(op: SetFanoutTokenOp): Promise<void> {
    await this.#requireGroup(op.groupId);
    await this.#x.c.tokens.updateOne(
      { groupId: op.groupId, clientId: op.clientId },
      { $set: { token: checkValueSize("token", op.token) } },
      { ...this.#o, upsert: true },
    );
  }

  async #removeFanoutToken(op: RemoveFanoutTokenOp): Promise<void> {
    await this.#x.c.tokens.deleteOne({ groupId: op.groupId, clientId: op.clientId }, this.#o);
  }

  // -------------------------------------------------------------------------
  // clients and KeyPackages

  async #putClient(op: PutClientOp): Promise<void> {
    const { c, now } = this.#x;
    await c.clients.updateOne(
      { _id: op.clientId },
      { $set: { sigKey: op.signaturePublicKey, authData: op.authData ?? null, updatedAt: now }, $setOnInsert: { createdAt: now } },
      { ...this.#o, upsert: true },
    );
    await scale.bumpClientsVersion(scale.scaleCollections(c), this.#x.session);
  }

  async #removeClient(op: RemoveClientOp): Promise<void> {
    const { c } = this.#x;
    await c.clients.deleteOne({ _id: op.clientId }, this.#o);
    await c.keyPackages.deleteMany({ clientId: op.clientId }, this.#o);
    await scale.bumpClientsVersion(scale.scaleCollections(c), this.#x.session);
  }

  async #publishKeyPackages(op: PublishKeyPackagesOp): Promise<void> {
    const { c, now } = this.#x;
    const count = op.keyPackages.length + (op.lastResort ? 1 : 0);
    // The client's age counter: concurrent publishes for one client conflict on it and serialize.
    const client = await c.clients.findOneAndUpdate(
      { _id: op.clientId },
      { $inc: { kpSeq: BigInt(count) } },
      { ...this.#o, returnDocument: "after", projection: { kpSeq: 1 } },
    );
    if (!client) throw new UnknownClientError(op.clientId);
    const seen = new Set<string>();
    for (const kp of op.keyPackages) {
      checkValueSize("KeyPackage", kp.keyPackage);
      const k = hex(kp.ref);
      if (seen.has(k)) throw new DuplicateKeyPackageError(kp.ref);
      seen.add(k);
    }
    if (op.keyPackages.length > 0) {
      const taken = await c.keyPackages.findOne({ ref: { $in: op.keyPackages.map((kp) => kp.ref) } }, { ...this.#o, projection: { ref: 1 } });
      if (taken) throw new DuplicateKeyPackageError(new Uint8Array(taken.ref as Uint8Array));
    }
    // A consumed package is never published (and handed out) again while it could still be used (docs/security.md).
    const refs = [...op.keyPackages.map((kp) => kp.ref), ...(op.lastResort ? [op.lastResort.ref] : [])];
    if (refs.length > 0) {
      const consumed = await c.consumed.findOne({ _id: { $in: refs.map((r) => Buffer.from(r)) }, expiresAt: { $gt: now } }, { ...this.#o, projection: { _id: 1 } });
      if (consumed) throw new ConsumedKeyPackageError(new Uint8Array(consumed._id as Uint8Array));
    }
    if (op.lastResort) {
      const lr = op.lastResort;
      checkValueSize("KeyPackage", lr.keyPackage);
      // Replaces the last-resort package of its suite (re-publishing the same ref is fine).
      await c.keyPackages.deleteMany({ clientId: op.clientId, ciphersuite: lr.ciphersuite, lastResort: true }, this.#o);
      if (seen.has(hex(lr.ref)) || (await c.keyPackages.findOne({ ref: lr.ref }, { ...this.#o, projection: { _id: 1 } }))) {
        throw new DuplicateKeyPackageError(lr.ref);
      }
    }
    if (count === 0) return;
    const first = big(client.kpSeq) - BigInt(count) + 1n;
    await c.keyPackages.insertMany(keyPackageDocs(op.clientId, first, op.keyPackages, op.lastResort, now), this.#o);
    if (op.maxStored !== undefined) {
      const held = await c.keyPackages.countDocuments({ clientId: op.clientId, lastResort: false, $or: [{ expiresAt: null }, { expiresAt: { $gt: now } }] }, this.#o);
      if (held > op.maxStored) throw new KeyPackageQuotaError(op.clientId, op.maxStored);
    }
  }

  async #consumeKeyPackage(op: ConsumeKeyPackageOp): Promise<void> {
    const { c, now } = this.#x;
    const base: Doc = {
      clientId: op.clientId,
      $or: [{ expiresAt: null }, { expiresAt: { $gt: now } }],
      ...(op.ciphersuite !== undefined ? { ciphersuite: op.ciphersuite } : {}),
    };
    // Oldest first by the client's counter; packages stored before it existed have no `n` and sort first.
    const order = { n: 1, _id: 1 } as const;
    const regular = await c.keyPackages.findOneAndDelete({ ...base, lastResort: false }, { ...this.#o, sort: order });
    if (regular) {
      // Remembered until it expires (at most a year), so it is never accepted again.
      const until = Math.min(regular.expiresAt == null ? Infinity : Number(regular.expiresAt), now + CONSUMED_KEY_PACKAGE_RETENTION_MS);
      await c.consumed.updateOne({ _id: Buffer.from(regular.ref as Uint8Array) }, { $set: { clientId: op.clientId, expiresAt: until } }, { ...this.#o, upsert: true });
      return void this.#keyPackages.push(keyPackageOf(regular));
    }
    const lr = await c.keyPackages.findOne({ ...base, lastResort: true }, { ...this.#o, sort: order });
    this.#keyPackages.push(lr ? keyPackageOf(lr) : undefined);
  }

  async #deleteKeyPackages(op: DeleteKeyPackagesOp): Promise<void> {
    const { c } = this.#x;
    if (op.refs === undefined) await c.keyPackages.deleteMany({ clientId: op.clientId }, this.#o);
    else if (op.refs.length > 0) await c.keyPackages.deleteMany({ clientId: op.clientId, ref: { $in: [...op.refs] } }, this.#o);
  }

  // -------------------------------------------------------------------------
  // queues and feeds

  async #append(op: AppendOp): Promise<void> {
    checkValueSize("payload", op.payload);
    const seq = await this.#bump(op.queue, 1n);
    const except = op.except !== undefined && op.except.length > 0 ? { except: [...op.except] } : {};
    if (op.prefix !== undefined && op.queue.startsWith("feed:")) throw new StoreError(`append to ${op.queue}: group feed entries take no prefix`);
    const prefix = op.prefix !== undefined ? { prefixId: await scale.putPrefix(scale.scaleCollections(this.#x.c), op.prefix, this.#x.session) } : {};
    await this.#x.c.entries.insertOne({ queue: op.queue, seq, payload: op.payload, enqueuedAt: this.#x.now, ...except, ...prefix }, this.#o);
    this.#appended.push({ queue: op.queue, seq });
  }

  async #joinFeed(op: JoinFeedOp): Promise<void> {
    const { c } = this.#x;
    const key = { clientId: op.clientId, groupId: op.groupId };
    const doc = await c.feedMembers.findOne(key, this.#o);
    let member = doc ? membershipOf(doc) : undefined;
    if (member !== undefined && member.until === undefined) return; // already receiving it
    // Left earlier with entries pending: a bounded part goes to its queue now, the rest stays pending (before the new membership's).
    if (member !== undefined) member = (await this.#pullMember(op.clientId, op.groupId, member, this.#x.joinPullLimit)).member;
    const next = rejoin(member, await this.#feedHead(op.groupId));
    await c.feedMembers.replaceOne(key, membershipDoc(op.clientId, op.groupId, next), { ...this.#o, upsert: true });
    if (doc) await this.#trimFeed(op.groupId);
    // The client's readers, on every instance, hear of it without an append: a fresh stamp is a real write.
    await this.#touch(clientQueue(op.clientId));
  }

  async #leaveFeed(op: LeaveFeedOp): Promise<void> {
    const { c } = this.#x;
    const head = await this.#feedHead(op.groupId);
    const who: Doc = op.clientId !== undefined ? { clientId: op.clientId } : {};
    await c.feedMembers.updateMany({ groupId: op.groupId, until: null, ...who }, { $set: { until: head } }, this.#o);
    // Memberships with nothing left before their end go (those with skip ranges go at their next pull).
    await c.feedMembers.deleteMany({ groupId: op.groupId, until: { $ne: null }, $expr: { $gte: ["$cursor", "$until"] } }, this.#o);
    await this.#trimFeed(op.groupId);
  }

  async #pullFeeds(op: PullFeedsOp): Promise<void> {
    const { c } = this.#x;
    let budget = pageSize(op.limit ?? DEFAULT_FEED_PULL_LIMIT, MAX_FIND_LIMIT);
    let bytes = this.#x.pullBytes;
    const members = await c.feedMembers.find({ clientId: op.clientId }, { ...this.#o, sort: { groupId: 1 } }).toArray();
    for (const doc of members) {
      if (budget <= 0 || bytes <= 0) break;
      const r = await this.#pullMember(op.clientId, String(doc.groupId), membershipOf(doc), budget, bytes);
      budget -= r.copied;
      bytes -= r.bytes;
    }
  }

  async #ack(op: AckOp): Promise<void> {
    const r = await this.#x.c.entries.deleteMany({ queue: op.queue, seq: { $lte: checkUint63("seq", op.uptoSeq) } }, this.#o);
    this.#acked += r.deletedCount;
  }

  async #deleteQueue(op: DeleteQueueOp): Promise<void> {
    const { c } = this.#x;
    await c.entries.deleteMany({ queue: op.queue }, this.#o);
    await c.queues.deleteOne({ _id: op.queue }, this.#o);
    this.#last.delete(op.queue);
  }

  async #markProcessed(op: MarkProcessedOp): Promise<void> {
    const { c } = this.#x;
    checkUint63("sequence", op.sequence);
    const p = await c.processed.findOne({ _id: op.source }, this.#o);
    if (p && op.sequence <= big(p.lastSeq)) throw new DuplicateBatch();
    await c.processed.updateOne({ _id: op.source }, { $set: { lastSeq: op.sequence } }, { ...this.#o, upsert: true });
  }

  // -------------------------------------------------------------------------
  // helpers

  /** CAS on the epoch: the write is filtered on it, so concurrent writers conflict on this document. */
  async #casGroup(groupId: string, expected: bigint, set: Doc): Promise<void> {
    checkUint63("expected epoch", expected);
    const update: Doc = { $inc: { v: 1 } };
    if (Object.keys(set).length > 0) update.$set = set;
    const r = await this.#x.c.groups.updateOne({ _id: groupId, epoch: expected }, update, this.#o);
    if (r.matchedCount === 1) return;
    const g = await this.#x.c.groups.findOne({ _id: groupId }, { ...this.#o, projection: { epoch: 1 } });
    if (!g) throw new UnknownGroupError(groupId);
    throw new EpochConflictError(groupId, expected, big(g.epoch));
  }

  /** Writes hanging off a group write the group document too, so they conflict with its deletion. */
  async #requireGroup(groupId: string): Promise<void> {
    const r = await this.#x.c.groups.updateOne({ _id: groupId }, { $inc: { v: 1 } }, this.#o);
    if (r.matchedCount === 0) throw new UnknownGroupError(groupId);
  }

  /** Add n to a queue's counter (gap-free: rolled back with the transaction); the new last sequence. */
  async #bump(queue: QueueId, n: bigint): Promise<bigint> {
    const q = await this.#x.c.queues.findOneAndUpdate(
      { _id: queue },
      { $inc: { lastSeq: n }, $set: { w: this.#x.nextStamp() } },
      { ...this.#o, upsert: true, returnDocument: "after", projection: { lastSeq: 1 } },
    );
    const seq = big(q!.lastSeq);
    this.#last.set(queue, seq);
    return seq;
  }

  /** Change a queue's counter without moving it, so its listeners (here: after commit; elsewhere: by the change stream) hear of it. */
  async #touch(queue: QueueId): Promise<void> {
    const q = await this.#x.c.queues.findOneAndUpdate(
      { _id: queue },
      { $setOnInsert: { lastSeq: 0n }, $set: { w: this.#x.nextStamp() } },
      { ...this.#o, upsert: true, returnDocument: "after", projection: { lastSeq: 1 } },
    );
    this.#last.set(queue, big(q!.lastSeq));
  }

  async #feedHead(groupId: string): Promise<bigint> {
    const q = await this.#x.c.queues.findOne({ _id: groupFeed(groupId) }, { ...this.#o, projection: { lastSeq: 1 } });
    return q ? big(q.lastSeq) : 0n;
  }

  /**
   * Copy up to `budget` entries (and about `bytes` payload bytes) of one
   * membership into the client's queue: bounded reads, one counter `$inc` by
   * the number copied and one insertMany. Stores the moved membership (or
   * deletes it when it ended) and trims the feed.
   */
  async #pullMember(
    clientId: string,
    groupId: string,
    start: Membership,
    budget: number,
    bytes = this.#x.pullBytes,
  ): Promise<{ member: Membership; copied: number; bytes: number }> {
    const { c, now } = this.#x;
    const feed = groupFeed(groupId);
    const head = await this.#feedHead(groupId);
    const read = async (range: FeedRange, limit: number) =>
      (
        await c.entries
          .find({ queue: feed, seq: { $gt: range.after, $lte: range.upto } }, { ...this.#o, sort: { seq: 1 }, limit, projection: { seq: 1, except: 1, payload: 1 } })
          .toArray()
      ).map((d) => ({
        seq: big(d.seq),
        except: Array.isArray(d.except) ? (d.except as string[]) : undefined,
        size: (d.payload as Uint8Array).byteLength,
        payload: d.payload as Uint8Array,
      }));
    const r = await pullMembership(start, head, clientId, budget, bytes, FEED_PAGE, read);
    const m = r.member;
    const payloads = r.copy.map((row) => row.payload);
    if (payloads.length > 0) {
      const queue = clientQueue(clientId);
      const last = await this.#bump(queue, BigInt(payloads.length));
      const first = last - BigInt(payloads.length) + 1n;
      await c.entries.insertMany(
        payloads.map((payload, i) => ({ queue, seq: first + BigInt(i), payload, enqueuedAt: now })),
        this.#o,
      );
      this.#pulled += payloads.length;
    }
    const key = { clientId, groupId };
    if (finished(m)) await c.feedMembers.deleteOne(key, this.#o);
    else if (m.cursor !== start.cursor || m.skip.length !== start.skip.length) {
      await c.feedMembers.updateOne(key, { $set: { cursor: m.cursor, skip: membershipDoc(clientId, groupId, m).skip } }, this.#o);
    }
    await this.#trimFeed(groupId);
    return { member: m, copied: payloads.length, bytes: r.bytes };
  }

  /** Drop feed entries every member has passed (all of them when no one receives the feed). */
  async #trimFeed(groupId: string): Promise<void> {
    const { c } = this.#x;
    const low = await c.feedMembers.findOne({ groupId }, { ...this.#o, sort: { cursor: 1 }, projection: { cursor: 1 } });
    const upto = low ? big(low.cursor) : await this.#feedHead(groupId);
    await c.entries.deleteMany({ queue: groupFeed(groupId), seq: { $lte: upto } }, this.#o);
  }

  /** As in the SQLite adapter: replace the latest snapshot, keeping what treeless history entries need (loadGroupAt). */
  async #replaceSnapshot(groupId: string, epoch: bigint, state: Uint8Array): Promise<void> {
    const { c } = this.#x;
    const o = this.#o;
    const oldest = await c.history.findOne({ groupId, treeless: true }, { ...o, sort: { epoch: 1 }, projection: { epoch: 1 } });
    const old = await c.snapshots.findOne({ _id: groupId }, o);
    if (oldest && big(oldest.epoch) < epoch) {
      if (old) {
        const r = await c.retained.updateOne({ groupId, epoch: big(old.epoch) }, { $setOnInsert: { state: old.state } }, { ...o, upsert: true });
        if (r.upsertedCount === 0) await this.#dropBlobs([old.state]); // that epoch was retained already
      }
      const from = await c.retained.findOne({ groupId, epoch: { $lte: big(oldest.epoch) } }, { ...o, sort: { epoch: -1 }, projection: { epoch: 1 } });
      if (from) {
        await this.#deleteWithBlobs(c.retained, { groupId, epoch: { $lt: big(from.epoch) } }, "state");
        await this.#deleteWithBlobs(c.log, { groupId, epoch: { $lte: big(from.epoch) } }, "entry");
      }
    } else {
      if (old) await this.#dropBlobs([old.state]);
      await this.#deleteWithBlobs(c.retained, { groupId, epoch: { $lt: epoch } }, "state");
      await this.#deleteWithBlobs(c.log, { groupId, epoch: { $lte: epoch } }, "entry");
    }
    await c.snapshots.replaceOne({ _id: groupId }, { epoch, state: await this.#putBlob(state, groupId) }, { ...o, upsert: true });
  }

  async #writeSnapshot(groupId: string, epoch: bigint, state: Uint8Array): Promise<void> {
    const { c } = this.#x;
    const old = await c.snapshots.findOne({ _id: groupId }, { ...this.#o, projection: { state: 1 } });
    if (old) await this.#dropBlobs([old.state]);
    await c.snapshots.replaceOne({ _id: groupId }, { epoch, state: await this.#putBlob(state, groupId) }, { ...this.#o, upsert: true });
  }

  /** Store a value of a group: inline, or in chunk documents (blobs.ts). The field's value. */
  async #putBlob(bytes: Uint8Array, groupId: string): Promise<Uint8Array | BlobRef> {
    const enc = encodeBlob(bytes, groupId, this.#x.newBlobId(), this.#x.blobLimits);
    if (enc.chunks.length > 0) await this.#x.c.chunks.insertMany(enc.chunks.map((ch) => ({ ...ch })), this.#o);
    return enc.value;
  }

  /** Delete the chunks of these field values (inline ones have none). */
  async #dropBlobs(values: readonly unknown[]): Promise<void> {
    const ids = blobIdsOf(values);
    if (ids.length > 0) await this.#x.c.chunks.deleteMany({ b: { $in: ids } }, this.#o);
  }

  /** deleteMany, and the chunks of the deleted documents' chunked `field`. */
  async #deleteWithBlobs(coll: Collections[keyof Collections], filter: Doc, field: string): Promise<void> {
    const chunked = await coll.find({ ...filter, [`${field}.blob`]: { $exists: true } }, { ...this.#o, projection: { [field]: 1 } }).toArray();
    await coll.deleteMany(filter, this.#o);
    await this.#dropBlobs(chunked.map((d) => d[field]));
  }
}

const big = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number));
const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

function dedupeRefs(refs: readonly Uint8Array[]): Uint8Array[] {
  const seen = new Set<string>();
  return refs.filter((r) => {
    const k = hex(r);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The queues a batch writes counters of (to re-check them when its commit outcome is unknown). */
export function queuesOf(ops: readonly WriteOp[]): QueueId[] {
  const out = new Set<QueueId>();
  for (const op of ops) {
    if (op.kind === "append") out.add(op.queue);
    else if (op.kind === "joinFeed" || op.kind === "pullFeeds") out.add(clientQueue(op.clientId));
  }
  return [...out];
}
