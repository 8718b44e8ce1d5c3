// The contract on MongoDB, and what only several instances on one replica
// set can show. Runs only with MONGODB_URI set to a replica set
// (transactions and change streams), e.g. .github/workflows/mongo.yml or
// `make test-mongo`; skipped otherwise. The logic that needs no server is in
// mongo-unit.test.ts.
import { randomBytes } from "node:crypto";
import { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { StoreOutcomeUnknownError, StoreRangeError, clientQueue, groupFeed, openStore, type Store } from "../../src/store/index.js";
import { isBlobRef } from "../../src/store/mongo/blobs.js";
import { MONGO_MIGRATIONS, openMongoStore, type MongoStore, type MongoStoreOptions } from "../../src/store/mongo/store.js";
import { MAX_DATE_MS, withDatabase } from "../../src/store/mongo/values.js";
import { runStoreContract, sleep, waitUntil } from "./contract.js";
import { runScaleContract } from "./contract-scale.js";

const uri = process.env.MONGODB_URI;
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (u: Uint8Array): string => new TextDecoder().decode(u);

describe.skipIf(!uri)("MongoDB adapter", () => {
  const freshDb = () => `mimi_ds_test_${randomBytes(6).toString("hex")}`;
  const admin = async <T>(f: (c: MongoClient) => Promise<T>): Promise<T> => {
    const c = new MongoClient(uri!);
    try {
      return await f(c);
    } finally {
      await c.close();
    }
  };
  const drop = async (name: string): Promise<void> => {
    await admin((c) => c.db(name).dropDatabase());
  };
  const open = (database: string, extra: Partial<MongoStoreOptions> = {}) => openMongoStore({ uri: uri!, database, ...extra });

  /**
   * Every chunk belongs to exactly one stored value and every chunked value has
   * all its chunks: nothing leaks, nothing is read short.
   */
  const checkChunks = (name: string) =>
    admin(async (c) => {
      const db = c.db(name);
      const owners = new Map<string, number>();
      for (const [coll, fields] of [
        ["group_snapshots", ["state"]],
        ["retained_snapshots", ["state"]],
        ["group_log", ["entry"]],
        ["history", ["ratchetTree", "groupInfo"]],
      ] as const) {
        for (const d of await db.collection(coll).find({}).toArray()) {
          for (const f of fields) {
            const v: unknown = d[f];
            if (!isBlobRef(v)) continue;
            expect(owners.has(v.blob), `blob ${v.blob} has two owners`).toBe(false);
            owners.set(v.blob, Number(v.n));
          }
        }
      }
      const counts = new Map<string, number>();
      for (const ch of await db.collection("blob_chunks").find({}, { projection: { b: 1 } }).toArray()) counts.set(String(ch.b), (counts.get(String(ch.b)) ?? 0) + 1);
      expect([...counts.keys()].filter((b) => !owners.has(b)), "orphaned chunks").toEqual([]);
      for (const [b, n] of owners) expect(counts.get(b) ?? 0, `chunks of ${b}`).toBe(n);
    });

  runStoreContract("mongodb", async () => {
    const name = freshDb();
    return { open: () => openStore(uri!, { mongoDatabase: name }), dispose: () => drop(name) };
  });

  // Issue 16: guest feed sets, shared entry prefixes, the clients version.
  runScaleContract("mongodb", async () => {
    const name = freshDb();
    return { open: () => openStore(uri!, { mongoDatabase: name }), dispose: () => drop(name) };
  });

  // Wake-ups by polling only: the contract's wake-up cases must hold without change streams too.
  runStoreContract("mongodb, change streams off", async () => {
    const name = freshDb();
    return { open: () => open(name, { changeStreams: false, pollMs: 50 }), dispose: () => drop(name) };
  });

  // Every stored state over 8 bytes chunked (64 KiB chunks: the 17 MiB case stays a few hundred documents), with the chunk bookkeeping checked after each case.
  runStoreContract("mongodb, every value chunked", async () => {
    const name = freshDb();
    return {
      open: () => open(name, { blobLimits: { inline: 8, chunkDoc: 64 * 1024 } }),
      dispose: async () => {
        await checkChunks(name);
        await drop(name);
      },
    };
  });

  const withStores = async (n: number, f: (stores: MongoStore[], name: string) => Promise<void>, extra: Partial<MongoStoreOptions>[] = []) => {
    const name = freshDb();
    const stores: MongoStore[] = [];
    try {
      for (let i = 0; i < n; i++) stores.push(await open(name, extra[i] ?? {}));
      await f(stores, name);
    } finally {
      for (const s of stores) await s.close();
      await drop(name);
    }
  };
  const append = (s: Store, queue: string, payload = new Uint8Array([1])) => s.apply({ ops: [{ kind: "append", queue, payload }] });

  it("wakes a waiter on another instance right after both opened (the stream starts at open)", async () => {
    await withStores(2, async ([a, b]) => {
      // No pause: a commit right after open must not fall into the gap before the stream's first response.
      const waiting = b!.waitForAppend("q", 0n);
      await append(a!, "q");
      expect(await Promise.race([waiting, sleep(10_000).then(() => "timed out")])).toBe(1n);
    });
  });

  it("wakes listeners of other instances, by change stream and by polling, for appends and for feed joins", async () => {
    await withStores(
      3,
      async ([a, b, c]) => {
        expect(b!.wakeups).toMatchObject({ streaming: true, polling: false });
        expect(c!.wakeups).toMatchObject({ streaming: false, polling: true });
        const kim = clientQueue("kim");
        const heardB: bigint[] = [];
        const heardC: bigint[] = [];
        b!.subscribe(kim, (s) => heardB.push(s));
        c!.subscribe(kim, (s) => heardC.push(s));
        // A join moves no sequence: only the counter's stamp changes.
        await a!.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "kim" }] });
        await waitUntil(() => heardB.length > 0 && heardC.length > 0, 10_000);
        expect(heardB[0]).toBe(0n);
        expect(heardC[0]).toBe(0n);
        await append(a!, kim);
        await waitUntil(() => heardB.includes(1n) && heardC.includes(1n), 10_000);
        // A's own listener heard each of its commits once (its own events are not repeated by the stream).
        const heardA: bigint[] = [];
        a!.subscribe(kim, (s) => heardA.push(s));
        await append(a!, kim);
        await sleep(1500);
        expect(heardA).toEqual([2n]);
      },
      [{}, {}, { changeStreams: false, pollMs: 50 }],
    );
  });

  it("notices a change stream that ends (collection dropped): polls meanwhile, then a new stream takes over", async () => {
    await withStores(
      2,
      async ([a, b], name) => {
        const heard: bigint[] = [];
        const heard2: bigint[] = [];
        b!.subscribe("q", (s) => heard.push(s));
        b!.subscribe("q2", (s) => heard2.push(s));
        await append(a!, "q");
        await waitUntil(() => heard.includes(1n), 10_000);
        // Dropping the counters invalidates every stream on them (their entries stay: new appends go to another queue).
        await admin((c) => c.db(name).collection("queues").drop());
        await waitUntil(() => b!.wakeups.stats.fallbacks > 0, 10_000);
        await append(a!, "q2"); // heard by polling (or by the new stream if it is back already)
        await waitUntil(() => heard2.includes(1n), 10_000);
        await waitUntil(() => b!.wakeups.streaming && !b!.wakeups.polling, 20_000);
        await append(a!, "q2"); // heard by the new stream
        await waitUntil(() => heard2.includes(2n), 10_000);
        expect(b!.wakeups.stats.streamsOpened).toBeGreaterThanOrEqual(2);
      },
      [{}, { streamRestartMs: 200, pollMs: 50 }],
    );
  });

  it("lets one of several instances win a commit race", async () => {
    await withStores(3, async (stores) => {
      await stores[0]!.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([0]) }] });
      const r = await Promise.allSettled(
        stores.flatMap((s) => [0, 1, 2].map((i) => s.apply({ ops: [{ kind: "advanceGroup", groupId: "g", expectedEpoch: 0n, logEntry: new Uint8Array([i]) }] }))),
      );
      expect(r.filter((x) => x.status === "fulfilled")).toHaveLength(1);
      expect(await stores[1]!.groupEpoch("g")).toBe(1n);
    });
  });

  it("instances opening a fresh database together migrate it once", async () => {
    const name = freshDb();
    const stores = await Promise.all(Array.from({ length: 5 }, () => open(name)));
    try {
      const meta = await admin((c) => c.db(name).collection("meta").find({}).toArray());
      expect(meta).toEqual([{ _id: "schema", version: MONGO_MIGRATIONS.length }]); // and no lock left behind
      const names = await admin(async (c) => (await c.db(name).listCollections({}, { nameOnly: true }).toArray()).map((x) => x.name).sort());
      expect(names).toEqual(expect.arrayContaining(["blob_chunks", "feed_members", "groups", "key_packages", "queue_entries", "queues", "rate_limits"]));
    } finally {
      for (const s of stores) await s.close();
      await drop(name);
    }
  });

  it("KeyPackages published on different instances are consumed in publish order", async () => {
    await withStores(2, async ([a, b]) => {
      await a!.apply({ ops: [{ kind: "putClient", clientId: "al", signaturePublicKey: new Uint8Array([1]) }] });
      const kp = (i: number) => ({ ref: new Uint8Array(32).fill(i), ciphersuite: 1, keyPackage: text(`kp${i}`) });
      await a!.apply({ ops: [{ kind: "publishKeyPackages", clientId: "al", keyPackages: [kp(1), kp(2)] }] });
      await b!.apply({ ops: [{ kind: "publishKeyPackages", clientId: "al", keyPackages: [kp(3)] }] });
      await a!.apply({ ops: [{ kind: "publishKeyPackages", clientId: "al", keyPackages: [kp(4)] }] });
      const order: string[] = [];
      for (let i = 0; i < 4; i++) order.push(str((await (i % 2 ? a! : b!).consumeKeyPackage("al"))!.keyPackage));
      expect(order).toEqual(["kp1", "kp2", "kp3", "kp4"]);
    });
  });

  it("a re-join with a long backlog copies a bounded part in its transaction and keeps the rest pending", async () => {
    await withStores(
      1,
      async ([s]) => {
        const feed = groupFeed("g");
        const post = (p: string) => s!.apply({ ops: [{ kind: "append", queue: feed, payload: text(p) }] });
        await s!.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "x" }, { kind: "joinFeed", groupId: "g", clientId: "y" }] });
        for (let i = 1; i <= 10; i++) await post(`m${i}`);
        await s!.apply({ ops: [{ kind: "leaveFeed", groupId: "g", clientId: "x" }] });
        for (let i = 1; i <= 5; i++) await post(`away${i}`);
        const join = await s!.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "x" }] });
        expect(join.pulled).toBe(3);
        await post("after");
        for (let i = 0; i < 20 && ((await s!.apply({ ops: [{ kind: "pullFeeds", clientId: "x", limit: 2 }] })).pulled ?? 0) > 0; i++);
        const inbox = (await s!.read(clientQueue("x"), 0n, 100)).map((e) => str(e.payload));
        expect(inbox).toEqual([...Array.from({ length: 10 }, (_, i) => `m${i + 1}`), "after"]);
        expect(await s!.feedMembers("g")).toEqual(["x", "y"]);
      },
      [{ joinPullLimit: 3 }],
    );
  });

  it("history TTL dates come after expiry and write, clamped; the old TTL index is gone", async () => {
    await withStores(1, async ([s], name) => {
      await s!.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([0]) }] });
      await s!.apply({
        ops: [
          { kind: "addHistory", groupId: "g", epoch: 1n, ratchetTree: new Uint8Array([1]), joiners: [new Uint8Array([1])], expiresAt: 1_000_000 },
          { kind: "addHistory", groupId: "g", epoch: 2n, ratchetTree: new Uint8Array([2]), joiners: [new Uint8Array([2])], expiresAt: Number.MAX_SAFE_INTEGER },
        ],
      });
      const docs = await admin((c) => c.db(name).collection("history").find({}, { sort: { epoch: 1 } }).toArray());
      expect((docs[0]!.ttlAt as Date).getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
      expect((docs[1]!.ttlAt as Date).getTime()).toBe(MAX_DATE_MS);
      const indexes = await admin((c) => c.db(name).collection("history").listIndexes().toArray());
      expect(indexes.map((i) => i.name)).not.toContain("expireAtDate_1");
      expect(indexes.find((i) => i.name === "ttl_at")).toMatchObject({ key: { ttlAt: 1 }, expireAfterSeconds: 0 });
    });
  });

  it("refuses a value that cannot fit a document, applying nothing", async () => {
    await withStores(1, async ([s]) => {
      await expect(s!.apply({ ops: [{ kind: "append", queue: "q", payload: new Uint8Array([1]) }, { kind: "append", queue: "q", payload: new Uint8Array(17 * 1024 * 1024) }] })).rejects.toBeInstanceOf(
        StoreRangeError,
      );
      expect(await s!.queueInfo("q")).toEqual({ lastSeq: 0n, firstSeq: undefined, length: 0 });
    });
  });

  describe("commit failures injected by the server (needs enableTestCommands; skipped without it)", () => {
    const appName = `mimi-failpoint-${randomBytes(4).toString("hex")}`;
    const failCommit = (data: Record<string, unknown>) =>
      admin((c) => c.db("admin").command({ configureFailPoint: "failCommand", mode: { times: 1 }, data: { failCommands: ["commitTransaction"], appName, ...data } }));
    const withFailpoints = async (ctx: { skip: () => void }, f: (s: MongoStore) => Promise<void>) => {
      try {
        await admin((c) => c.db("admin").command({ configureFailPoint: "failCommand", mode: "off" }));
      } catch (err) {
        if ((err as { code?: unknown }).code !== 59) throw err; // CommandNotFound: a server without enableTestCommands
        ctx.skip();
        return;
      }
      const name = freshDb();
      const s = await openMongoStore({ uri: withDatabase(uri!, name) + `${uri!.includes("?") ? "&" : "?"}appName=${appName}` });
      try {
        await f(s);
      } finally {
        await admin((c) => c.db("admin").command({ configureFailPoint: "failCommand", mode: "off" })).catch(() => undefined);
        await s.close();
        await drop(name);
      }
    };

    it("a commit that applied but was not confirmed is 'outcome unknown', and local waiters still wake", async (ctx) => {
      await withFailpoints(ctx, async (s) => {
        const waiting = s.waitForAppend("q", 0n);
        await failCommit({ writeConcernError: { code: 100, codeName: "UnsatisfiableWriteConcern", errmsg: "injected" } });
        await expect(append(s, "q")).rejects.toBeInstanceOf(StoreOutcomeUnknownError);
        // It did apply: reporting "nothing applied" would have been wrong.
        expect((await s.read("q", 0n, 10)).map((e) => e.seq)).toEqual([1n]);
        expect(await waiting).toBe(1n);
      });
    });

    it("a transient commit error is retried whole: applied once, gap-free", async (ctx) => {
      await withFailpoints(ctx, async (s) => {
        await failCommit({ errorCode: 112, errorLabels: ["TransientTransactionError"] });
        expect((await append(s, "q")).appended).toEqual([{ queue: "q", seq: 1n }]);
        await failCommit({ closeConnection: true });
        expect((await append(s, "q")).appended).toEqual([{ queue: "q", seq: 2n }]);
        expect((await s.read("q", 0n, 10)).map((e) => e.seq)).toEqual([1n, 2n]);
      });
    });
  });
});
