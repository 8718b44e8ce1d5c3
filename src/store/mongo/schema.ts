// The MongoDB adapter's collections, indexes and migrations. The schema
// version lives in meta {_id: "schema", version}; MONGO_MIGRATIONS is
// positional and append-only (shipped steps are never edited).

import { migrateHardening } from "./harden-ds.js";
import { scaleMigration } from "./scale-ops.js";
import { randomBytes } from "node:crypto";
import type { Collection, Db } from "mongodb";
import { StoreError, StoreUnavailableError } from "../errors.js";
import { duplicateKeyOf } from "./errors.js";

/** Collection names by role. */
export const COLLECTIONS = {
  groups: "groups",
  snapshots: "group_snapshots",
  log: "group_log",
  proposals: "proposals",
  history: "history",
  tokens: "fanout_tokens",
  clients: "clients",
  keyPackages: "key_packages",
  queues: "queues",
  entries: "queue_entries",
  feedMembers: "feed_members",
  retained: "retained_snapshots",
  processed: "processed",
  rates: "rate_limits",
  chunks: "blob_chunks",
  tombstones: "group_tombstones",
  seen: "seen_requests",
  owners: "group_owners",
  consumed: "consumed_key_packages",
  feedSets: "feed_sets",
  prefixes: "entry_prefixes",
  counters: "counters",
  meta: "meta",
} as const;

// Untyped documents: the adapter owns its schema; the port types are the contract.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Doc = { _id?: any; [key: string]: any };
export type Collections = { readonly [K in keyof typeof COLLECTIONS]: Collection<Doc> };

export function collectionsOf(db: Db): Collections {
  const out: Record<string, Collection<Doc>> = {};
  for (const [role, name] of Object.entries(COLLECTIONS)) out[role] = db.collection<Doc>(name);
  return out as Collections;
}

/** Versioned schema (collections and indexes). Append only. */
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
  {
    // Transactions that create a collection implicitly conflict with each other
    // (40 concurrent batches on a fresh database): every collection exists up front.
    name: "all collections created up front",
    up: async (db) => {
      const existing = new Set((await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name));
      for (const name of Object.values(COLLECTIONS)) {
        if (existing.has(name)) continue;
        try {
          await db.createCollection(name);
        } catch (err) {
          if (codeOf(err) !== 48) throw err; // NamespaceExists: another instance created it
        }
      }
    },
  },
  {
    // The old TTL index deleted entries one hour after `expiresAt`, which for an
    // expiry in the past (or an Invalid Date, written as 1970) is at once. The new
    // one runs on `ttlAt` (values.ts ttlDate: after both expiry and write, clamped).
    name: "history TTL on ttlAt",
    up: async (db) => {
      await dropIndexIfPresent(db.collection("history"), "expireAtDate_1");
      await db.collection("history").createIndex({ ttlAt: 1 }, { expireAfterSeconds: 0, name: "ttl_at" });
    },
  },
  {
    name: "purge indexes",
    up: async (db) => {
      await db.collection("history").createIndex({ expiresAt: 1 });
      await db.collection("key_packages").createIndex({ expiresAt: 1 });
    },
  },
  {
    // Age order of a client's KeyPackages is a per-client counter `n` (ObjectIds of different instances are not ordered).
    name: "KeyPackage age counter",
    up: async (db) => {
      await db.collection("key_packages").createIndex({ clientId: 1, lastResort: 1, ciphersuite: 1, n: 1 });
      await db.collection("key_packages").createIndex({ clientId: 1, lastResort: 1, n: 1 });
    },
  },
  {
    name: "blob chunks",
    up: async (db) => {
      await db.collection("blob_chunks").createIndex({ b: 1, i: 1 }, { unique: true });
      await db.collection("blob_chunks").createIndex({ g: 1 });
    },
  },
  {
    // Deleted groups stay deleted: group_tombstones {_id: groupId, deletedAt, expiresAt}
    // (created here: databases past "all collections created up front" lack it).
    // Proposals gain createdAt (absent on older documents: read as 0).
    name: "group tombstones",
    up: async (db) => {
      try {
        await db.createCollection("group_tombstones");
      } catch (err) {
        if (codeOf(err) !== 48) throw err;
      }
      await db.collection("group_tombstones").createIndex({ expiresAt: 1 });
    },
  },
  {
    name: "replay records, group owners",
    up: migrateHardening,
  },
  {
    // Refs of consumed KeyPackages (_id: the ref), never published again until expiresAt.
    name: "consumed key packages",
    up: async (db) => {
      try {
        await db.createCollection("consumed_key_packages");
      } catch (err) {
        if (codeOf(err) !== 48) throw err;
      }
      await db.collection("consumed_key_packages").createIndex({ expiresAt: 1 });
    },
  },
  scaleMigration,
];

const codeOf = (err: unknown): number | undefined => {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === "number" ? c : undefined;
};

async function dropIndexIfPresent(c: Collection, name: string): Promise<void> {
  try {
    await c.dropIndex(name);
  } catch (err) {
    if (codeOf(err) !== 27 && codeOf(err) !== 26) throw err; // IndexNotFound, NamespaceNotFound
  }
}

export interface MigrateOptions {
  /** How long a migration lock is held without renewal before another instance may take it over. */
  readonly leaseMs?: number;
  /** How long to wait for another instance's migration. */
  readonly waitMs?: number;
}

/**
 * Bring the schema to MONGO_MIGRATIONS.length. Instances starting together
 * take turns: a lock document in `meta` (a lease, renewed after each step)
 * lets one run the steps while the others wait and then find nothing to do.
 * Index builds are idempotent, so a crash between a step and its version bump
 * is harmless.
 */
export async function migrateMongo(db: Db, options: MigrateOptions = {}): Promise<number> {
  const meta = db.collection<{ _id: string; version?: number; owner?: string; until?: number }>("meta");
  const latest = MONGO_MIGRATIONS.length;
  const versionNow = async (): Promise<number> => {
    const v = (await meta.findOne({ _id: "schema" }))?.version ?? 0;
    if (v > latest) throw new StoreError(`database schema version ${v} is newer than this build supports (${latest})`);
    return v;
  };
  if ((await versionNow()) === latest) return latest;

  const leaseMs = options.leaseMs ?? 60_000;
  const deadline = Date.now() + (options.waitMs ?? 5 * 60_000);
  const owner = randomBytes(9).toString("base64url");
  const take = async (): Promise<boolean> => {
    const now = Date.now();
    try {
      await meta.updateOne(
        { _id: "migration_lock", $or: [{ owner }, { until: { $lt: now } }] },
        { $set: { owner, until: now + leaseMs } },
        { upsert: true },
      );
      return true;
    } catch (err) {
      if (duplicateKeyOf(err) !== undefined) return false; // held by another instance (the upsert hit its _id)
      throw err;
    }
  };
  while (!(await take())) {
    if (Date.now() > deadline) throw new StoreUnavailableError("mongodb: another instance holds the migration lock; gave up waiting");
    await new Promise((r) => setTimeout(r, 250));
  }
  try {
    for (let v = await versionNow(); v < latest; v++) {
      await MONGO_MIGRATIONS[v]!.up(db);
      await meta.updateOne({ _id: "schema" }, { $set: { version: v + 1 } }, { upsert: true });
      if (!(await take())) throw new StoreUnavailableError("mongodb: lost the migration lock (a step outran its lease)");
    }
  } finally {
    await meta.deleteOne({ _id: "migration_lock", owner }).catch(() => undefined);
  }
  return latest;
}
