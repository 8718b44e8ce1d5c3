// Issue 16 (federation at scale) in the MongoDB adapter, kept apart from
// store.ts (which another change reworks at the same time): the guest feeds'
// recipient sets (setFeedSet / feedSet), the shared entry prefixes of outbox
// entries (AppendOp.prefix), and the clients version. Same semantics as the
// SQLite adapter (docs/storage.md); store.ts calls these from its ops and reads.
//
// Documents:
//   feed_sets       {_id: groupId, setId}
//   entry_prefixes  {_id: "<groupId>\n<ref>", groupId, ref, epoch, data}; unique by _id,
//                   index {groupId, epoch}; queue entries carry `prefixId` (indexed, sparse)
//   counters        {_id: "clients", value}
import type { ClientSession, Collection, Db, Document } from "mongodb";
import { checkUint63, plainBytes, prefixedEntry } from "../common.js";
import { FeedSetConflictError, StoreError } from "../errors.js";
import type { EntryPrefix, QueueEntry, SetFeedSetOp } from "../port.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = { _id?: any; [key: string]: any };

export interface ScaleCollections {
  readonly feedSets: Collection<Doc>;
  readonly prefixes: Collection<Doc>;
  readonly counters: Collection<Doc>;
  readonly entries: Collection<Doc>;
  readonly groups: Collection<Doc>;
}

export function scaleCollections(c: { readonly feedSets: Collection<Doc>; readonly prefixes: Collection<Doc>; readonly counters: Collection<Doc>; readonly entries: Collection<Doc>; readonly groups: Collection<Doc> }): ScaleCollections {
  return { feedSets: c.feedSets, prefixes: c.prefixes, counters: c.counters, entries: c.entries, groups: c.groups };
}

/** The migration step (appended to MONGO_MIGRATIONS). */
export const scaleMigration = {
  name: "guest feed sets, shared entry prefixes, clients version",
  up: async (db: Db): Promise<void> => {
    // Created here: databases past "all collections created up front" lack them.
    for (const name of ["feed_sets", "entry_prefixes", "counters"]) {
      try {
        await db.createCollection(name);
      } catch (err) {
        if ((err as { code?: unknown }).code !== 48) throw err; // NamespaceExists
      }
    }
    await db.collection("entry_prefixes").createIndex({ groupId: 1, epoch: 1 });
    await db.collection("queue_entries").createIndex({ prefixId: 1 }, { sparse: true });
  },
};

const prefixKey = (groupId: string, ref: string): string => `${groupId}\n${ref}`;

/** setFeedSet: compare-and-set of a guest feed's recipient set id. */
export async function setFeedSet(c: ScaleCollections, op: SetFeedSetOp, session: ClientSession): Promise<void> {
  const doc = await c.feedSets.findOne({ _id: op.groupId }, { session });
  const current = doc == null ? undefined : String(doc.setId);
  if (current !== op.expected) throw new FeedSetConflictError(op.groupId, op.expected, current);
  // Written even when unchanged, so that two instances checking the same set conflict instead of
  // both passing on a snapshot that the other is about to change.
  await c.feedSets.updateOne({ _id: op.groupId }, { $set: { setId: op.setId } }, { session, upsert: true });
}

export async function feedSetOf(c: ScaleCollections, groupId: string): Promise<string | undefined> {
  const doc = await c.feedSets.findOne({ _id: groupId });
  return doc == null ? undefined : String(doc.setId);
}

/** The id queue entries name a prefix by (inserted if not stored). */
export async function putPrefix(c: ScaleCollections, prefix: EntryPrefix, session: ClientSession): Promise<string> {
  const _id = prefixKey(prefix.groupId, prefix.ref);
  await c.prefixes.updateOne(
    { _id },
    { $setOnInsert: { groupId: prefix.groupId, ref: prefix.ref, epoch: checkUint63("epoch", prefix.epoch), data: prefix.bytes } },
    { session, upsert: true },
  );
  return _id;
}

/** Prefixes of `groupId` below `epoch` (all: undefined) that no entry names. */
export async function sweepPrefixes(c: ScaleCollections, groupId: string, epoch: bigint | undefined, session?: ClientSession): Promise<number> {
  const filter: Doc = { groupId, ...(epoch !== undefined ? { epoch: { $lt: epoch } } : {}) };
  let n = 0;
  for (const p of await c.prefixes.find(filter, { session, projection: { _id: 1 } }).toArray()) {
    if ((await c.entries.findOne({ prefixId: p._id }, { session, projection: { _id: 1 } })) !== null) continue;
    n += (await c.prefixes.deleteOne({ _id: p._id }, { session })).deletedCount;
  }
  return n;
}

/** purgeExpired: every prefix no entry names whose group is gone or past its epoch. */
export async function purgePrefixes(c: ScaleCollections, session: ClientSession): Promise<number> {
  let n = 0;
  for (const p of await c.prefixes.find({}, { session, projection: { _id: 1, groupId: 1, epoch: 1 } }).toArray()) {
    const g = await c.groups.findOne({ _id: p.groupId }, { session, projection: { epoch: 1 } });
    if (g !== null && BigInt(g.epoch) <= BigInt(p.epoch)) continue;
    if ((await c.entries.findOne({ prefixId: p._id }, { session, projection: { _id: 1 } })) !== null) continue;
    n += (await c.prefixes.deleteOne({ _id: p._id }, { session })).deletedCount;
  }
  return n;
}

export async function bumpClientsVersion(c: ScaleCollections, session: ClientSession): Promise<void> {
  await c.counters.updateOne({ _id: "clients" }, { $inc: { value: 1n } }, { session, upsert: true });
}

export async function clientsVersionOf(c: ScaleCollections): Promise<bigint> {
  const doc = await c.counters.findOne({ _id: "clients" });
  return doc == null ? 0n : BigInt(doc.value);
}

/**
 * Readers' view of entries with a prefix: prefix bytes || own payload. Prefixes
 * never change once stored (their key names their content), so they are cached.
 */
export class PrefixReader {
  readonly #cache = new Map<string, Uint8Array>();
  constructor(private readonly c: ScaleCollections) {}

  async entries(docs: readonly Document[]): Promise<QueueEntry[]> {
    const missing = [...new Set(docs.filter((d) => d.prefixId != null && !this.#cache.has(String(d.prefixId))).map((d) => String(d.prefixId)))];
    if (missing.length > 0) {
      for (const p of await this.c.prefixes.find({ _id: { $in: missing } }).toArray()) {
        if (this.#cache.size >= 64) this.#cache.delete(this.#cache.keys().next().value!);
        this.#cache.set(String(p._id), plainBytes(p.data as Buffer));
      }
    }
    return docs.map((d) => {
      const own = plainBytes(d.payload as Buffer);
      if (d.prefixId == null) return { seq: BigInt(d.seq), payload: own, enqueuedAt: Number(d.enqueuedAt) };
      const id = String(d.prefixId);
      const prefix = this.#cache.get(id);
      if (prefix === undefined) throw new StoreError(`queue entry names entry prefix ${id}, which is not stored`);
      return prefixedEntry(BigInt(d.seq), Number(d.enqueuedAt), id, prefix, own);
    });
  }
}
