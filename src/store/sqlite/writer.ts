// The writing side of the SQLite adapter: one connection that applies group
// commits (each apply in a SAVEPOINT of one BEGIN IMMEDIATE transaction) and
// the few other writes (ack, rate limits, purge). SqliteStore runs it in a
// worker thread (writer-thread.ts), so that the fsync of a commit does not
// stop the event loop, or inline (in-memory databases, `writer: "inline"`).
import type Database from "better-sqlite3";
import { checkUint63, rateWindow } from "../common.js";
import {
  ConsumedKeyPackageError,
  DuplicateKeyPackageError,
  EpochConflictError,
  KeyPackageQuotaError,
  FeedSetConflictError,
  GroupExistsError,
  QuotaExceededError,
  StoreError,
  UnknownClientError,
  UnknownGroupError,
} from "../errors.js";
import {
  clientQueue,
  CONSUMED_KEY_PACKAGE_RETENTION_MS,
  DEFAULT_FEED_PULL_LIMIT,
  groupFeed,
  isGroupFeed,
  type AppliedWrite,
  type PurgeResult,
  type QueueId,
  type QueueTrim,
  type RateLimitResult,
  type RateLimitRule,
  type StoredKeyPackage,
  type WriteOp,
} from "../port.js";
import { big, keyPackageOf, num, prepare, type Row, type Statements } from "./statements.js";

/** Thrown inside a transaction to roll a duplicate batch back; never escapes. */
export class DuplicateBatch extends Error {}

/** SQLite rolled the whole transaction back (I/O error, disk full, ...): the group fails as a whole. */
export class GroupAborted extends Error {
  constructor(readonly original: unknown) {
    super("group commit aborted");
  }
}

/** One apply call's result in a group: its AppliedWrite and the last sequence of each queue it appended to, or its error. */
export type ApplyOutcome = { readonly ok: { result: AppliedWrite; appended: Map<QueueId, bigint> } } | { readonly err: unknown };

export class SqliteWriter {
  readonly #db: Database.Database;
  readonly #s: Statements;
  readonly #groupTx: (batches: readonly (readonly WriteOp[])[]) => ApplyOutcome[];
  /** The clock of the group being written (the caller's, so both sides agree). */
  #now = 0;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#s = prepare(db);
    // Inside the group's transaction better-sqlite3 runs a nested transaction as a SAVEPOINT:
    // a throw rolls back to it (and releases it) and rethrows.
    const one = db.transaction((ops: readonly WriteOp[]) => this.#applyOps(ops));
    const group = db.transaction((batches: readonly (readonly WriteOp[])[]): ApplyOutcome[] =>
      batches.map((ops) => {
        try {
          return { ok: one(ops) };
        } catch (err) {
          // Some errors (SQLITE_FULL, IOERR, ...) make SQLite roll the whole transaction back.
          if (!db.inTransaction) throw new GroupAborted(err);
          return { err };
        }
      }),
    );
    // IMMEDIATE: take the write lock at BEGIN, so concurrent writers queue on busy_timeout instead of deadlocking on upgrade.
    this.#groupTx = (batches) => group.immediate(batches);
  }

  /** One transaction (one fsync) for all batches; throws GroupAborted when none of it was applied. */
  applyGroup(batches: readonly (readonly WriteOp[])[], now: number): ApplyOutcome[] {
    this.#now = now;
    return this.#groupTx(batches);
  }

  rateLimit(key: string, rule: RateLimitRule, now: number): RateLimitResult {
    const w = rateWindow(rule, now);
    return this.#db
      .transaction(() => {
        const row = this.#s.getRate.get(key) as Row | undefined;
        const used = row && num(row.window_start) === w.start ? num(row.count) : 0;
        const allowed = used + w.cost <= rule.limit;
        const count = allowed ? used + w.cost : used;
        if (allowed || !row || num(row.window_start) !== w.start) this.#s.upsertRate.run(key, w.start, w.end, count);
        return { allowed, count, remaining: Math.max(0, rule.limit - count), resetAt: w.end };
      })
      .immediate();
  }

  purgeExpired(now: number): PurgeResult {
    return this.#db
      .transaction(() => {
        this.#s.purgeHistoryJoiners.run(now);
        const historyEntries = this.#s.purgeHistory.run(now).changes;
        const keyPackages = this.#s.purgeKeyPackages.run(now).changes;
        const rateLimits = this.#s.purgeRates.run(now).changes;
        const tombstones = this.#s.purgeTombstones.run(now).changes;
        const seenRequests = this.#s.purgeSeenRequests.run(now).changes;
        const consumedKeyPackages = this.#s.purgeConsumed.run(now).changes;
        const prefixes = this.#s.purgePrefixes.run().changes;
        return { historyEntries, keyPackages, rateLimits, tombstones, seenRequests, consumedKeyPackages, prefixes };
      })
      .immediate();
  }

  trimQueues(prefix: string, trim: QueueTrim): number {
    const s = this.#s;
    return this.#db
      .transaction(() => {
        let dropped = 0;
        for (const q of s.queuesWithPrefix.all(prefix, `${prefix}\uffff`) as Row[]) {
          const queue = String(q.queue);
          let upto = 0n;
          if (trim.keepLast !== undefined) upto = big(q.last_seq) - BigInt(Math.max(0, Math.floor(trim.keepLast)));
          if (trim.enqueuedBefore !== undefined) {
            const old = (s.lastEntryBefore.get(queue, trim.enqueuedBefore) as Row).seq;
            if (old != null && big(old) > upto) upto = big(old);
          }
          if (upto > 0n) dropped += s.ackQueue.run(queue, upto).changes;
        }
        return dropped;
      })
      .immediate();
  }

  #applyOps(ops: readonly WriteOp[]): { result: AppliedWrite; appended: Map<QueueId, bigint> } {
    const s = this.#s;
    const now = this.#now;
    const appended: { queue: QueueId; seq: bigint }[] = [];
    const keyPackages: (StoredKeyPackage | undefined)[] = [];
    const epochs: { groupId: string; epoch: bigint }[] = [];
    let pulled = 0;
    let acked = 0;
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
          const tomb = s.getTombstone.get(op.groupId) as Row | undefined;
          if (tomb && num(tomb.expires_at) > now) throw new GroupExistsError(op.groupId, true);
          if (op.owner !== undefined && num((s.countOwnedGroups.get(op.owner.clientId) as Row).n) >= op.owner.maxGroups)
            throw new QuotaExceededError(`groups created by ${op.owner.clientId}`, op.owner.maxGroups);
          s.insertGroup.run(op.groupId, op.epoch, op.metadata ?? null, now, now);
          if (op.owner !== undefined) s.setGroupOwner.run(op.owner.clientId, op.groupId);
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
          s.sweepPrefixesBefore.run(op.groupId, next);
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
          if (op.tombstoneUntil !== undefined) s.upsertTombstone.run(op.groupId, now, op.tombstoneUntil);
          s.deleteSeenRequestsOfGroup.run(op.groupId);
          s.sweepPrefixesOfGroup.run(op.groupId);
          break;
        }
        case "addProposal": {
          requireEpoch(op.groupId);
          s.insertProposal.run(op.groupId, checkUint63("epoch", op.epoch), op.ref, op.proposal, now);
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
          s.bumpClientsVersion.run();
          break;
        case "removeClient":
          s.deleteClient.run(op.clientId);
          s.deleteKeyPackagesOfClient.run(op.clientId);
          s.bumpClientsVersion.run();
          break;
        case "publishKeyPackages": {
          if (!s.getClient.get(op.clientId)) throw new UnknownClientError(op.clientId);
          const fresh = (ref: Uint8Array): void => {
            if (s.keyPackageByRef.get(ref)) throw new DuplicateKeyPackageError(ref);
            if (s.consumedByRef.get(ref, now)) throw new ConsumedKeyPackageError(ref);
          };
          for (const kp of op.keyPackages) {
            fresh(kp.ref);
            s.insertKeyPackage.run(op.clientId, kp.ciphersuite, kp.ref, kp.keyPackage, 0, kp.expiresAt ?? null, now);
          }
          if (op.lastResort) {
            const kp = op.lastResort;
            s.deleteLastResort.run(op.clientId, kp.ciphersuite);
            fresh(kp.ref);
            s.insertKeyPackage.run(op.clientId, kp.ciphersuite, kp.ref, kp.keyPackage, 1, kp.expiresAt ?? null, now);
          }
          if (op.maxStored !== undefined && num((s.countKeyPackages.get(op.clientId, null, null, now) as Row).n) > op.maxStored) {
            throw new KeyPackageQuotaError(op.clientId, op.maxStored);
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
          const feed = isGroupFeed(op.queue);
          if (feed && op.prefix !== undefined) throw new StoreError(`append to ${op.queue}: group feed entries take no prefix`);
          // Stored apart (queue_payloads), once: a payload the batch shares among entries (a message to the
          // feed and the outboxes, counted for all of them), and every feed payload (members' copies point at it).
          const shared = sharedPayloads.get(op.payload);
          const payloadId = shared !== undefined ? (shared.id ??= this.#storePayload(op.payload, shared.refs)) : feed ? this.#storePayload(op.payload, 1) : undefined;
          if (feed) s.insertFeedEntry.run(op.queue, seq, payloadId, now, op.except !== undefined && op.except.length > 0 ? op.except.join("\n") : null);
          else {
            const prefixId = op.prefix === undefined ? null : this.#prefixId(op.prefix);
            if (payloadId === undefined) s.insertEntry.run(op.queue, seq, op.payload, now, prefixId);
            else s.insertSharedEntry.run(op.queue, seq, payloadId, now, prefixId);
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
        case "setFeedSet": {
          const row = s.getFeedSet.get(op.groupId) as Row | undefined;
          const current = row === undefined ? undefined : String(row.set_id);
          if (current !== op.expected) throw new FeedSetConflictError(op.groupId, op.expected, current);
          if (current !== op.setId) s.upsertFeedSet.run(op.groupId, op.setId);
          break;
        }
        case "ack":
          acked += s.ackQueue.run(op.queue, checkUint63("seq", op.uptoSeq)).changes;
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
        case "recordRequest": {
          const scope = op.groupId ?? "";
          const epoch = op.groupId === undefined ? -2n : op.epoch !== undefined ? checkUint63("epoch", op.epoch) : -1n;
          const seen = s.getSeenRequest.get(scope, epoch, op.key) as Row | undefined;
          if (seen !== undefined && num(seen.expires_at) > now) throw new DuplicateBatch();
          s.upsertSeenRequest.run(scope, epoch, op.key, op.expiresAt);
          s.purgeSomeSeenRequests.run(now);
          if (op.groupId !== undefined && op.forgetBefore !== undefined) s.forgetSeenRequestsBefore.run(op.groupId, checkUint63("epoch", op.forgetBefore));
          break;
        }
        default: {
          const never: never = op;
          throw new StoreError(`unknown write op ${(never as { kind: string }).kind}`);
        }
      }
    }
    return { result: { duplicate: false, appended, keyPackages, epochs, ...(pulled > 0 ? { pulled } : {}), ...(acked > 0 ? { acked } : {}) }, appended: lastByQueue };
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

  /** A payload stored once for `refs` entries; its count is kept apart (queue_payload_refs), and only from two. */
  #storePayload(payload: Uint8Array, refs: number): bigint {
    const id = big((this.#s.insertPayload.get(payload) as Row).id);
    if (refs > 1) this.#s.insertPayloadRefs.run(id, refs);
    return id;
  }

  /** The stored prefix's id, inserting it if it is not stored (yet, or any more). */
  #prefixId(prefix: { groupId: string; epoch: bigint; ref: string; bytes: Uint8Array }): bigint {
    const row = this.#s.prefixId.get(prefix.groupId, prefix.ref) as Row | undefined;
    if (row !== undefined) return big(row.id);
    return big((this.#s.insertPrefix.get(prefix.groupId, prefix.ref, checkUint63("epoch", prefix.epoch), prefix.bytes) as Row).id);
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
      s.insertSharedEntry.run(queue, seq, e.payload_id, now, null);
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
      const until = Math.min(regular.expires_at == null ? Infinity : num(regular.expires_at), now + CONSUMED_KEY_PACKAGE_RETENTION_MS);
      s.insertConsumed.run(regular.ref, clientId, until);
      return keyPackageOf(regular);
    }
    const last = s.pickKeyPackage.get(clientId, 1, suite, suite, now) as Row | undefined;
    return last ? keyPackageOf(last) : undefined;
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
