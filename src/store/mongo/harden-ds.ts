// MongoDB side of the accept-once records, the group-owner quota and queue
// trimming (docs/security.md), kept apart from store.ts: the adapter's
// switch calls these with its collections and transaction session.
//
// Collections: seen_requests {_id: key, groupId, epoch, expiresAt, expireAtDate}
// (TTL index as a safety net; purgeExpired is the authoritative purge) and
// group_owners {_id: clientId}, a document every create of that owner writes,
// so two concurrent creates of one owner conflict and the retried one counts
// the other's group.
import type { ClientSession, Collection, Db, Document } from "mongodb";
import { checkUint63 } from "../common.js";
import { QuotaExceededError } from "../errors.js";
import type { CreateGroupOp, QueueTrim, RecordRequestOp } from "../port.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = { _id?: any; [key: string]: any };

/** The migration's index builds (MONGO_MIGRATIONS "replay records, group owners"). */
export async function migrateHardening(db: Db): Promise<void> {
  // Created here: databases past "all collections created up front" lack them.
  for (const name of ["seen_requests", "group_owners"]) {
    try {
      await db.createCollection(name);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 48) throw err; // NamespaceExists
    }
  }
  await db.collection("seen_requests").createIndex({ groupId: 1, epoch: 1 }, { partialFilterExpression: { groupId: { $type: "string" } } });
  await db.collection("seen_requests").createIndex({ expiresAt: 1 });
  await db.collection("seen_requests").createIndex({ expireAtDate: 1 }, { expireAfterSeconds: 3600 });
  await db.collection("groups").createIndex({ owner: 1 }, { partialFilterExpression: { owner: { $type: "string" } } });
}

export interface HardeningCollections {
  readonly groups: Collection<Doc>;
  readonly seen: Collection<Doc>;
  readonly owners: Collection<Doc>;
  readonly queues: Collection<Doc>;
  readonly entries: Collection<Doc>;
}

export const hardeningCollections = (c: { readonly groups: Collection<Doc>; readonly seen: Collection<Doc>; readonly owners: Collection<Doc>; readonly queues: Collection<Doc>; readonly entries: Collection<Doc> }): HardeningCollections => ({
  groups: c.groups,
  seen: c.seen,
  owners: c.owners,
  queues: c.queues,
  entries: c.entries,
});

/** recordRequest: true when an unexpired record exists (the batch is a duplicate); else records it. */
export async function recordRequest(c: HardeningCollections, op: RecordRequestOp, now: number, session: ClientSession): Promise<boolean> {
  const o = { session };
  const seen = await c.seen.findOne({ _id: Buffer.from(op.key) }, o);
  if (seen && Number(seen.expiresAt) > now) return true;
  const epoch = op.epoch !== undefined ? checkUint63("epoch", op.epoch) : null;
  await c.seen.replaceOne(
    { _id: Buffer.from(op.key) },
    { groupId: op.groupId ?? null, epoch, expiresAt: op.expiresAt, expireAtDate: new Date(Math.min(op.expiresAt, 8.64e15)) },
    { ...o, upsert: true },
  );
  if (op.groupId !== undefined && op.forgetBefore !== undefined)
    await c.seen.deleteMany({ groupId: op.groupId, epoch: { $lt: checkUint63("epoch", op.forgetBefore) } }, o);
  // A few expired records go with each new one, so the collection stays bounded without a scheduled purge.
  const expired = await c.seen.find({ expiresAt: { $lte: now } }, { ...o, limit: 8, projection: { _id: 1 } }).toArray();
  if (expired.length > 0) await c.seen.deleteMany({ _id: { $in: expired.map((d) => d._id) } }, o);
  return false;
}

/** Before createGroup inserts: the owner's quota (QuotaExceededError), taken under the owner's conflict document. */
export async function checkOwner(c: HardeningCollections, op: CreateGroupOp, now: number, session: ClientSession): Promise<void> {
  if (op.owner === undefined) return;
  const o = { session };
  await c.owners.updateOne({ _id: op.owner.clientId }, { $set: { touchedAt: now } }, { ...o, upsert: true });
  if ((await c.groups.countDocuments({ owner: op.owner.clientId }, o)) >= op.owner.maxGroups)
    throw new QuotaExceededError(`groups created by ${op.owner.clientId}`, op.owner.maxGroups);
}

/** The fields createGroup adds to the group document. */
export const ownerFields = (op: CreateGroupOp): Document => (op.owner !== undefined ? { owner: op.owner.clientId } : {});

/** deleteGroup: the group's accept-once records go with it. */
export async function deleteGroupRecords(c: HardeningCollections, groupId: string, session: ClientSession): Promise<void> {
  await c.seen.deleteMany({ groupId }, { session });
}

export async function purgeSeenRequests(c: HardeningCollections, now: number, session: ClientSession): Promise<number> {
  return (await c.seen.deleteMany({ expiresAt: { $lte: now } }, { session })).deletedCount;
}

/** trimQueues for every queue whose name starts with `prefix`. */
export async function trimQueues(c: HardeningCollections, prefix: string, trim: QueueTrim, session: ClientSession): Promise<number> {
  const o = { session };
  let dropped = 0;
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  for (const q of await c.queues.find({ _id: { $regex: `^${escaped}` } }, o).toArray()) {
    const queue = String(q._id);
    let upto = 0n;
    if (trim.keepLast !== undefined) upto = BigInt(q.lastSeq) - BigInt(Math.max(0, Math.floor(trim.keepLast)));
    if (trim.enqueuedBefore !== undefined) {
      const old = await c.entries.find({ queue, enqueuedAt: { $lt: trim.enqueuedBefore } }, { ...o, sort: { seq: -1 }, limit: 1, projection: { seq: 1 } }).toArray();
      if (old[0] !== undefined && BigInt(old[0].seq) > upto) upto = BigInt(old[0].seq);
    }
    if (upto > 0n) dropped += (await c.entries.deleteMany({ queue, seq: { $lte: upto } }, o)).deletedCount;
  }
  return dropped;
}
