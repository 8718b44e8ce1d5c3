// The MongoDB adapter's logic that does not need a server: error translation
// (with the driver's own error classes), URIs and client options, limits,
// TTL dates, chunking of large values, feed pulls, wake-up de-duplication,
// stored document shapes (golden BSON). Runs everywhere; the parts that need
// a replica set are in mongo.test.ts (MONGODB_URI).
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import {
  BSON,
  MongoBulkWriteError,
  MongoClient,
  MongoClientClosedError,
  MongoError,
  MongoErrorLabel,
  MongoInvalidArgumentError,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
  MongoWriteConcernError,
  ObjectId,
} from "mongodb";
import { describe, expect, it } from "vitest";
import {
  DuplicateKeyPackageError,
  GroupExistsError,
  StoreClosedError,
  StoreError,
  StoreOutcomeUnknownError,
  StoreRangeError,
  StoreUnavailableError,
  openStore,
} from "../../src/store/index.js";
import { assembleBlob, blobIdsOf, chunkPayload, DEFAULT_BLOB_LIMITS, encodeBlob, isBlobRef, type BlobLimits } from "../../src/store/mongo/blobs.js";
import { historyDoc, keyPackageDocs, keyPackageOf, membershipDoc, membershipOf } from "../../src/store/mongo/documents.js";
import { duplicateKeyOf, markUpsertRace, translateMongoError, type TranslateContext } from "../../src/store/mongo/errors.js";
import {
  finished,
  leave,
  normalize,
  pullMembership,
  rejoin,
  type FeedRange,
  type FeedRow,
  type Membership,
} from "../../src/store/mongo/feeds.js";
import { MONGO_MIGRATIONS } from "../../src/store/mongo/schema.js";
import { openMongoStore } from "../../src/store/mongo/store.js";
import {
  checkValueSize,
  copyBytes,
  databaseOf,
  DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
  drainBatches,
  listLimit,
  MAX_DATE_MS,
  MAX_FIND_LIMIT,
  mongoClientOptions,
  pageSize,
  redact,
  TTL_GRACE_MS,
  ttlDate,
  withDatabase,
} from "../../src/store/mongo/values.js";
import { stamp, StampTracker, wakeupOf } from "../../src/store/mongo/wakeups.js";

const op: TranslateContext = { phase: "operation", closing: false };
const commit: TranslateContext = { phase: "commit", closing: false };
const read: TranslateContext = { phase: "read", closing: false };
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
/** Byte equality without a deep-equal walk (values here go up to 20 MiB). */
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** A server error as the driver builds it from a reply. */
const serverError = (reply: Record<string, unknown>): MongoServerError => new MongoServerError({ ok: 0, ...reply });
const dupKey = (collection: string, index: string, dup: string, extra: Record<string, unknown> = {}): MongoServerError =>
  serverError({ code: 11000, codeName: "DuplicateKey", errmsg: `E11000 duplicate key error collection: mimi_ds.${collection} index: ${index} dup key: ${dup}`, ...extra });

describe("MongoDB error translation", () => {
  it("an unconfirmed commit is 'outcome unknown', never 'nothing applied'", () => {
    const utcr = new MongoNetworkError("connection 4 to 10.0.0.1:27017 closed");
    utcr.addErrorLabel(MongoErrorLabel.UnknownTransactionCommitResult);
    const wc = new MongoWriteConcernError({
      ok: 1,
      writeConcernError: { code: 64, codeName: "WriteConcernTimeout", errmsg: "waiting for replication timed out", errInfo: { wtimeout: true } },
    });
    const unsatisfiable = serverError({ code: 100, codeName: "UnsatisfiableWriteConcern", errmsg: "Not enough data-bearing nodes" });
    for (const err of [utcr, wc, unsatisfiable, new MongoClientClosedError(), new MongoTopologyClosedError()]) {
      for (const closing of [false, true]) {
        const t = translateMongoError(err, { phase: "commit", closing });
        expect(t, err.constructor.name).toBeInstanceOf(StoreOutcomeUnknownError);
        expect(t).not.toBeInstanceOf(StoreUnavailableError); // whose contract is "nothing was applied"
        expect((t as Error).cause).toBe(err);
      }
    }
  });

  it("a commit that failed with TransientTransactionError applied nothing: unavailable", () => {
    const e = serverError({ code: 251, codeName: "NoSuchTransaction", errmsg: "Transaction 3 has been aborted.", errorLabels: ["TransientTransactionError"] });
    expect(translateMongoError(e, commit)).toBeInstanceOf(StoreUnavailableError);
    // The same error inside the transaction (withTransaction gave up retrying): nothing applied either.
    const conflict = serverError({ code: 112, codeName: "WriteConflict", errmsg: "Write conflict during plan execution", errorLabels: ["TransientTransactionError"] });
    expect(translateMongoError(conflict, op)).toBeInstanceOf(StoreUnavailableError);
  });

  it("a write concern error on a write outside a transaction is 'outcome unknown'", () => {
    const wc = new MongoWriteConcernError({ ok: 1, n: 1, writeConcernError: { code: 64, codeName: "WriteConcernTimeout", errmsg: "timed out" } });
    expect(translateMongoError(wc, op)).toBeInstanceOf(StoreOutcomeUnknownError);
  });

  it("E11000 is translated by the index it names", () => {
    const ref = new Uint8Array(32).fill(0xab);
    const kp = translateMongoError(dupKey("key_packages", "ref_1", "{ ref: BinData(0, ...) }", { keyPattern: { ref: 1 }, keyValue: { ref: Buffer.from(ref) } }), op);
    expect(kp).toBeInstanceOf(DuplicateKeyPackageError);
    expect((kp as DuplicateKeyPackageError).keyPackageRef).toEqual(ref);
    // Without keyValue (older servers, write errors): the ref from the message's BinData.
    const b64 = Buffer.from(ref).toString("base64");
    const kp2 = translateMongoError(dupKey("key_packages", "ref_1", `{ ref: BinData(0, ${b64}) }`), op);
    expect((kp2 as DuplicateKeyPackageError).keyPackageRef).toEqual(ref);

    const g = translateMongoError(dupKey("groups", "_id_", '{ _id: "g1" }', { keyValue: { _id: "g1" } }), op);
    expect(g).toBeInstanceOf(GroupExistsError);
    expect((g as GroupExistsError).groupId).toBe("g1");

    // An upsert race on a unique index: nothing applied, try again.
    for (const [coll, index] of [
      ["feed_members", "clientId_1_groupId_1"],
      ["history", "groupId_1_epoch_1"],
      ["queues", "_id_"],
      ["key_packages", "one_last_resort"],
      ["meta", "_id_"],
    ] as const) {
      expect(translateMongoError(dupKey(coll, index, "{ }"), op), `${coll}/${index}`).toBeInstanceOf(StoreUnavailableError);
    }
    // The adapter's own invariants: an internal error, not "try again".
    for (const [coll, index] of [
      ["queue_entries", "queue_1_seq_1"],
      ["group_log", "groupId_1_epoch_1"],
      ["blob_chunks", "b_1_i_1"],
    ] as const) {
      const t = translateMongoError(dupKey(coll, index, "{ }"), op);
      expect(t).toBeInstanceOf(StoreError);
      expect(t).not.toBeInstanceOf(StoreUnavailableError);
      expect((t as Error).message).toContain(`${coll}/${index}`);
    }
  });

  it("an upsert race inside a transaction is marked transient (withTransaction retries it); other duplicates are not", () => {
    const race = dupKey("queues", "_id_", '{ _id: "client:a" }');
    expect(race.hasErrorLabel(MongoErrorLabel.TransientTransactionError)).toBe(false);
    expect(markUpsertRace(race)).toBe(true);
    expect(race.hasErrorLabel(MongoErrorLabel.TransientTransactionError)).toBe(true);
    for (const e of [dupKey("key_packages", "ref_1", "{ }"), dupKey("groups", "_id_", "{ }"), dupKey("queue_entries", "queue_1_seq_1", "{ }"), new TypeError("x")]) {
      expect(markUpsertRace(e)).toBe(false);
      if (e instanceof MongoError) expect(e.hasErrorLabel(MongoErrorLabel.TransientTransactionError)).toBe(false);
    }
  });

  it("E11000 inside insertMany (MongoBulkWriteError) is found too", () => {
    const ref = new Uint8Array(32).fill(7);
    const writeError = {
      index: 1,
      code: 11000,
      errmsg: "E11000 duplicate key error collection: mimi_ds.key_packages index: ref_1 dup key: { ref: BinData(0, Bwc=) }",
      keyValue: { ref: Buffer.from(ref) },
    };
    const bulk = new MongoBulkWriteError({ message: writeError.errmsg, code: 11000, writeErrors: [writeError] } as never, {} as never);
    expect(duplicateKeyOf(bulk)).toMatchObject({ collection: "key_packages", index: "ref_1" });
    expect((translateMongoError(bulk, op) as DuplicateKeyPackageError).keyPackageRef).toEqual(ref);
  });

  it("a document over 16 MiB is a StoreRangeError, whoever notices it first", () => {
    let bsonError: unknown;
    try {
      BSON.serialize({ state: new Uint8Array(17 * 1024 * 1024) }); // the driver's serializer, before anything is sent
    } catch (err) {
      bsonError = err;
    }
    expect(bsonError).toBeInstanceOf(RangeError);
    const tooLarge = [
      bsonError,
      serverError({ code: 10334, codeName: "BSONObjectTooLarge", errmsg: "BSONObj size: 16777300 (0x1000054) is invalid. Size must be between 0 and 16793600(16MB)" }),
      serverError({ code: 17419, errmsg: "Resulting document after update is larger than 16777216" }),
      new MongoInvalidArgumentError("Document is larger than the maximum size 16777216"),
    ];
    for (const e of tooLarge) expect(translateMongoError(e, op)).toBeInstanceOf(StoreRangeError);
  });

  it("closed-client errors are StoreClosedError while closing, else unavailable", async () => {
    const closedErrors: unknown[] = [new MongoClientClosedError(), new MongoNotConnectedError("Client must be connected before running operations")];
    // And the real ones: a call in flight when the client closes, and a call after.
    const client = new MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200");
    const inflight = client.db("x").collection("y").findOne({});
    await client.close();
    closedErrors.push(await inflight.catch((e: unknown) => e));
    closedErrors.push(await client.db("x").collection("y").findOne({}).catch((e: unknown) => e));
    expect(closedErrors[2]).toBeInstanceOf(MongoTopologyClosedError);
    expect(closedErrors[3]).toBeInstanceOf(MongoNotConnectedError);
    for (const e of closedErrors) {
      expect(translateMongoError(e, { phase: "read", closing: true })).toBeInstanceOf(StoreClosedError);
      expect(translateMongoError(e, { phase: "operation", closing: true })).toBeInstanceOf(StoreClosedError);
      const t = translateMongoError(e, read);
      expect(t).toBeInstanceOf(StoreUnavailableError);
      expect(t).not.toBeInstanceOf(StoreClosedError);
    }
  });

  it("an unreachable server is unavailable (a real MongoServerSelectionError)", async () => {
    const client = new MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200");
    const err = await client.connect().catch((e: unknown) => e);
    await client.close();
    expect(err).toBeInstanceOf(MongoServerSelectionError);
    expect(translateMongoError(err, read)).toBeInstanceOf(StoreUnavailableError);
    expect(translateMongoError(err, op)).toBeInstanceOf(StoreUnavailableError);
  });

  it("failover and time-limit codes are unavailable; other server errors are internal; ours pass through", () => {
    for (const code of [10107, 11602, 189, 91, 50, 262, 290]) expect(translateMongoError(serverError({ code, errmsg: "x" }), op)).toBeInstanceOf(StoreUnavailableError);
    const bad = translateMongoError(serverError({ code: 2, codeName: "BadValue", errmsg: "unknown operator: $foo" }), op);
    expect(bad).toBeInstanceOf(StoreError);
    expect(bad).not.toBeInstanceOf(StoreUnavailableError);
    expect((bad as Error).message).toContain("BadValue");
    const ours = new GroupExistsError("g");
    expect(translateMongoError(ours, commit)).toBe(ours);
    const bug = new TypeError("x is undefined");
    expect(translateMongoError(bug, op)).toBe(bug);
    expect(translateMongoError(new MongoError("driver bug"), op)).toBeInstanceOf(StoreError);
  });
});

describe("MongoDB URIs and client options", () => {
  const cases: [uri: string, db: string][] = [
    ["mongodb://127.0.0.1:27018/?replicaSet=rs0&directConnection=true", ""],
    ["mongodb://db1:27017,db2:27017,db3:27017/mimi?replicaSet=rs0", "mimi"],
    ["mongodb://user:p%40ss%2Fw@db1,db2/ops_db?authSource=admin", "ops_db"],
    ["mongodb+srv://cluster0.example.net/prod?retryWrites=true", "prod"],
    ["mongodb://host", ""],
    ["mongodb://host/", ""],
    ["mongodb://host/my%20db", "my db"],
  ];

  it("reads and replaces the database of single-host, multi-host and SRV URIs", () => {
    expect(() => new URL("mongodb://db1:27017,db2:27017/mimi")).toThrow(); // what the e2e test used to do
    for (const [uri, db] of cases) {
      expect(databaseOf(uri), uri).toBe(db);
      const next = withDatabase(uri, "mimi_e2e_1");
      expect(databaseOf(next)).toBe("mimi_e2e_1");
      // Hosts, credentials and options as written; the driver parses the result.
      const [, hostsBefore, queryBefore] = /^[^:]+:\/\/([^/?]*)[^?]*(\?.*)?$/.exec(uri)!;
      const [, hostsAfter, queryAfter] = /^[^:]+:\/\/([^/?]*)[^?]*(\?.*)?$/.exec(next)!;
      expect(hostsAfter).toBe(hostsBefore);
      expect(queryAfter).toBe(queryBefore);
      if (!uri.startsWith("mongodb+srv")) expect(new MongoClient(next).options.dbName).toBe("mimi_e2e_1");
    }
    expect(() => withDatabase("mongodb://h/", "a/b")).toThrow(StoreRangeError);
    expect(() => withDatabase("mongodb://h/", "")).toThrow(StoreRangeError);
    expect(() => databaseOf("postgres://h/x")).toThrow(StoreRangeError);
    expect(redact("mongodb://user:secret@h1,h2/db")).toBe("mongodb://user:***@h1,h2/db");
  });

  it("majority reads and writes; a 5 s server selection time-out unless the URI sets one", () => {
    const plain = new MongoClient("mongodb://a:1,b:2/?replicaSet=rs0", mongoClientOptions("mongodb://a:1,b:2/?replicaSet=rs0"));
    expect(plain.options.readConcern?.level).toBe("majority");
    expect(plain.options.writeConcern?.w).toBe("majority");
    expect(plain.options.serverSelectionTimeoutMS).toBe(DEFAULT_SERVER_SELECTION_TIMEOUT_MS);
    const uri = "mongodb://a:1/?serverSelectionTimeoutMS=1234";
    expect(new MongoClient(uri, mongoClientOptions(uri)).options.serverSelectionTimeoutMS).toBe(1234);
  });

  it("opening an unreachable server fails fast with StoreUnavailableError", async () => {
    await expect(openMongoStore({ uri: "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300" })).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(openStore("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});

describe("MongoDB limits, dates and bytes", () => {
  it("listGroups limits mean what they mean in SQLite", async () => {
    const sqlite = await openStore("sqlite::memory:");
    try {
      const ids = ["a", "b", "c", "d"];
      for (const id of ids) await sqlite.apply({ ops: [{ kind: "createGroup", groupId: id, epoch: 0n, snapshot: new Uint8Array(1) }] });
      for (const limit of [-1, -7, 0, 1, 3, 4, 9, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, MAX_FIND_LIMIT + 1]) {
        const l = listLimit(limit);
        const mongoLike = l === undefined ? ids : ids.slice(0, l);
        expect(mongoLike, String(limit)).toEqual(await sqlite.listGroups({ limit }));
        expect(l === undefined || (Number.isInteger(l) && l >= 0 && l <= MAX_FIND_LIMIT)).toBe(true);
      }
      for (const limit of [2.5, Number.NaN, Number.POSITIVE_INFINITY, 1e20]) {
        expect(() => listLimit(limit)).toThrow(StoreRangeError);
        await expect(sqlite.listGroups({ limit })).rejects.toThrow();
      }
    } finally {
      await sqlite.close();
    }
    expect(pageSize(Number.MAX_SAFE_INTEGER)).toBe(MAX_FIND_LIMIT);
    expect(pageSize(0)).toBe(1);
    expect(pageSize(Number.NaN, 1000)).toBe(1000);
    expect(pageSize(17.9, 1000)).toBe(17);
  });

  it("TTL dates are valid, after both expiry and write, never 1970", () => {
    // The defect: an out-of-range expiry made an Invalid Date, which BSON writes as 1970 (deleted at once).
    const bad = BSON.deserialize(BSON.serialize({ d: new Date(Number.MAX_SAFE_INTEGER) })).d as Date;
    expect(bad.getTime()).toBe(0);
    const wallNow = Date.UTC(2030, 0, 1);
    expect(ttlDate(1_000_000, wallNow).getTime()).toBe(wallNow + TTL_GRACE_MS); // a contract case stores expiries in 1970
    expect(ttlDate(wallNow + 5000, wallNow).getTime()).toBe(wallNow + 5000 + TTL_GRACE_MS);
    for (const special of [Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Number.POSITIVE_INFINITY, Number.NaN]) {
      expect(ttlDate(special, wallNow).getTime()).toBe(MAX_DATE_MS);
    }
    expect(ttlDate(Number.NEGATIVE_INFINITY, wallNow).getTime()).toBe(wallNow + TTL_GRACE_MS);
    fc.assert(
      fc.property(fc.oneof(fc.double(), fc.integer({ min: -1e16, max: 1e16 }), fc.constantFrom(0, -1, MAX_DATE_MS, MAX_DATE_MS + 1)), (expiresAt) => {
        const d = ttlDate(expiresAt, wallNow);
        const back = (BSON.deserialize(BSON.serialize({ d })).d as Date).getTime();
        expect(back).toBe(d.getTime()); // survives BSON as written
        expect(back).toBeGreaterThanOrEqual(wallNow + TTL_GRACE_MS);
        if (Number.isFinite(expiresAt)) expect(back).toBeGreaterThanOrEqual(Math.min(MAX_DATE_MS, expiresAt + TTL_GRACE_MS));
      }),
      { seed: 1515, numRuns: 500 },
    );
  });

  it("bytes read back are copies, not views into the driver's reply buffer", () => {
    const reply = Buffer.from(randomBytes(4096));
    const view = reply.subarray(100, 132); // what promoteBuffers hands out
    const copy = copyBytes(view);
    expect(copy).toEqual(new Uint8Array(view));
    expect(copy.buffer).not.toBe(reply.buffer);
    expect(copy.byteLength).toBe(copy.buffer.byteLength);
    expect(Buffer.isBuffer(copy)).toBe(false);
    reply.fill(0);
    expect(copy.some((x) => x !== 0)).toBe(true);
    expect(copyBytes(null)).toEqual(new Uint8Array(0));
    expect(() => copyBytes("text")).toThrow(StoreRangeError);
    expect(() => checkValueSize("payload", new Uint8Array(11), 10)).toThrow(StoreRangeError);
  });

  it("drainBatches runs bounded steps until one is short", async () => {
    let left = 2345;
    const sizes: number[] = [];
    const total = await drainBatches(1000, async () => {
      const n = Math.min(1000, left);
      left -= n;
      sizes.push(n);
      return n;
    });
    expect(total).toBe(2345);
    expect(sizes).toEqual([1000, 1000, 345]);
    expect(await drainBatches(10, async () => 0)).toBe(0);
  });
});

describe("MongoDB chunking of large values", () => {
  const MiB = 1024 * 1024;
  /** The document as stored: the driver adds an ObjectId _id. */
  const storedSize = (chunk: object): number => BSON.calculateObjectSize({ _id: new ObjectId(), ...chunk });

  it("splits values over the inline size into chunks of at most chunkDoc BSON bytes and reassembles them", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 1, max: 200 }),
        fc.integer({ min: 90, max: 400 }),
        fc.string({ maxLength: 60 }),
        fc.integer(),
        (size, inline, chunkDoc, groupId, seed) => {
          const limits: BlobLimits = { inline, chunkDoc };
          const bytes = new Uint8Array(size).map((_, i) => (i * 31 + seed) & 0xff);
          const blobId = randomBytes(12).toString("base64url");
          let enc;
          try {
            enc = encodeBlob(bytes, groupId, blobId, limits);
          } catch (err) {
            // Only when not even one byte of data fits next to the group id.
            expect(err).toBeInstanceOf(StoreRangeError);
            expect(size).toBeGreaterThan(inline);
            return;
          }
          if (size <= inline) {
            expect(enc.value).toBe(bytes);
            expect(enc.chunks).toEqual([]);
            return;
          }
          expect(isBlobRef(enc.value)).toBe(true);
          expect(enc.value).toEqual({ blob: blobId, n: enc.chunks.length, size });
          for (const ch of enc.chunks) expect(storedSize(ch)).toBeLessThanOrEqual(chunkDoc);
          // Chunks are as full as allowed except the last.
          for (const ch of enc.chunks.slice(0, -1)) expect(storedSize(ch)).toBe(chunkDoc);
          const shuffled = [...enc.chunks].reverse().map((ch) => BSON.deserialize(BSON.serialize(ch), { promoteBuffers: true }) as { i: unknown; data: unknown });
          expect(same(assembleBlob(enc.value as never, shuffled), bytes)).toBe(true);
        },
      ),
      { seed: 2025, numRuns: 200 },
    );
  });

  it("a 20 MiB snapshot becomes three documents under 8 MiB with the default limits", () => {
    const state = new Uint8Array(20 * MiB).fill(3);
    const enc = encodeBlob(state, "group-with-x509-members", "blob1");
    expect(enc.chunks).toHaveLength(3);
    for (const ch of enc.chunks) expect(storedSize(ch)).toBeLessThanOrEqual(8 * MiB);
    expect(same(assembleBlob(enc.value as never, enc.chunks), state)).toBe(true);
    // Up to the inline size a value stays in its document: a 10,000-member snapshot with basic credentials (~2.5 MB).
    expect(encodeBlob(new Uint8Array(DEFAULT_BLOB_LIMITS.inline), "g", "b").chunks).toEqual([]);
    expect(chunkPayload("b".repeat(16), "g".repeat(400), DEFAULT_BLOB_LIMITS)).toBeGreaterThan(8 * MiB - 1024);
  });

  it("a damaged chunk set is an error, never a short or wrong value", () => {
    const enc = encodeBlob(new Uint8Array(100).map((_, i) => i), "g", "id", { inline: 10, chunkDoc: 90 });
    const ref = enc.value as never;
    const chunks = enc.chunks.map((c) => ({ i: c.i, data: c.data }));
    expect(chunks.length).toBeGreaterThan(2);
    expect(() => assembleBlob(ref, chunks.slice(1))).toThrow(/missing/);
    expect(() => assembleBlob(ref, [...chunks, chunks[0]!])).toThrow(/damaged/);
    expect(() => assembleBlob(ref, [...chunks, { i: chunks.length, data: new Uint8Array(1) }])).toThrow(/damaged/);
    expect(() => assembleBlob(ref, chunks.map((c, k) => (k === 0 ? { i: 0, data: c.data.subarray(1) } : c)))).toThrow(/damaged/);
    expect(() => assembleBlob(ref, chunks.map((c) => ({ i: c.i, data: "x" })))).toThrow(/damaged/);
    expect(blobIdsOf([new Uint8Array(3), null, undefined, ref, ref, { blob: "other", n: 1, size: 1 }])).toEqual(["id", "other"]);
    expect(isBlobRef(Buffer.from("blob"))).toBe(false);
  });

  it("golden: chunk documents and the reference left in the field", () => {
    const enc = encodeBlob(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), "g1", "B1", { inline: 4, chunkDoc: 64 });
    // {b: "B1", i: 0|1|2, g: "g1", data: 4, 4 and 2 bytes}: 64 bytes each with the driver's _id, the last shorter.
    expect(enc.chunks.map((c) => hex(BSON.serialize(c)))).toEqual([
      "2f00000002620003000000423100106900000000000267000300000067310005646174610004000000000102030400",
      "2f00000002620003000000423100106900010000000267000300000067310005646174610004000000000506070800",
      "2d0000000262000300000042310010690002000000026700030000006731000564617461000200000000090a00",
    ]);
    // {state: {blob: "B1", n: 3, size: 10}}
    expect(hex(BSON.serialize({ state: enc.value }))).toBe(
      "2f000000037374617465002300000002626c6f620003000000423100106e00030000001073697a65000a0000000000",
    );
  });
});

describe("MongoDB feed memberships", () => {
  type Row = FeedRow & { payload: string };
  const clients = ["a", "b", "c"] as const;

  it("a seeded random run of appends, joins, leaves and bounded pulls delivers exactly what each member should get, in order", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ t: fc.constant("append" as const), except: fc.subarray([...clients]), size: fc.integer({ min: 0, max: 50 }) }),
            fc.record({ t: fc.constant("join" as const), who: fc.constantFrom(...clients), bound: fc.integer({ min: 1, max: 4 }) }),
            fc.record({ t: fc.constant("leave" as const), who: fc.constantFrom(...clients) }),
            fc.record({ t: fc.constant("pull" as const), who: fc.constantFrom(...clients), budget: fc.integer({ min: 1, max: 5 }), bytes: fc.integer({ min: 1, max: 120 }) }),
          ),
          { maxLength: 120 },
        ),
        async (steps) => {
          let head = 0n;
          let feed: Row[] = [];
          const members = new Map<string, Membership>();
          const member = new Set<string>(); // the model: who receives what is appended now
          const expected = new Map<string, string[]>(clients.map((c) => [c, []]));
          const got = new Map<string, string[]>(clients.map((c) => [c, []]));
          const read = async (range: FeedRange, limit: number) => feed.filter((r) => r.seq > range.after && r.seq <= range.upto).slice(0, limit);
          const trim = () => {
            const cursors = [...members.values()].map((m) => m.cursor);
            const low = cursors.length > 0 ? cursors.reduce((x, y) => (x < y ? x : y)) : head;
            feed = feed.filter((r) => r.seq > low);
          };
          const pull = async (who: string, budget: number, bytes: number) => {
            const m = members.get(who);
            if (!m) return 0;
            const r = await pullMembership(m, head, who, budget, bytes, 2, read);
            expect(r.copy.length).toBeLessThanOrEqual(budget);
            expect(r.scanned).toBeLessThanOrEqual(budget);
            if (r.copy.length > 0) expect(r.bytes - r.copy[r.copy.length - 1]!.size).toBeLessThan(bytes); // only the last row may cross the byte budget
            got.get(who)!.push(...r.copy.map((x) => x.payload));
            if (finished(r.member)) members.delete(who);
            else members.set(who, r.member);
            trim();
            return r.copy.length;
          };
          for (const s of steps) {
            if (s.t === "append") {
              head++;
              const payload = `m${head}`;
              feed.push({ seq: head, except: s.except, size: s.size, payload });
              for (const c of member) if (!(s.except as readonly string[]).includes(c)) expected.get(c)!.push(payload);
            } else if (s.t === "join") {
              if (member.has(s.who)) continue;
              member.add(s.who);
              const old = members.get(s.who);
              if (old) await pull(s.who, s.bound, Number.MAX_SAFE_INTEGER); // the bounded pre-pull of a re-join
              members.set(s.who, rejoin(members.get(s.who), head));
              trim();
            } else if (s.t === "leave") {
              if (!member.delete(s.who)) continue;
              const m = leave(members.get(s.who)!, head);
              if (finished(m)) members.delete(s.who);
              else members.set(s.who, m);
              trim();
            } else {
              await pull(s.who, s.budget, s.bytes);
            }
          }
          // Drain: every pending entry arrives, nothing else, in feed order.
          for (const c of clients) {
            for (let i = 0; i < 10_000 && members.has(c) && normalize(members.get(c)!).cursor < (members.get(c)!.until ?? head); i++) await pull(c, 3, 40);
            expect(got.get(c)).toEqual(expected.get(c));
          }
        },
      ),
      { seed: 1510, numRuns: 300 },
    );
  });

  it("a re-join with a pending backlog keeps it and skips what came while away", () => {
    const left: Membership = { cursor: 2n, until: 5n, skip: [] };
    expect(rejoin(left, 9n)).toEqual({ cursor: 2n, until: undefined, skip: [[5n, 9n]] });
    expect(rejoin({ cursor: 5n, until: 5n, skip: [] }, 9n)).toEqual({ cursor: 9n, until: undefined, skip: [] });
    expect(rejoin({ cursor: 2n, until: 5n, skip: [] }, 5n)).toEqual({ cursor: 2n, until: undefined, skip: [] });
    // Adjacent ranges merge: left at 9 again, back at 12.
    expect(rejoin({ cursor: 2n, until: 9n, skip: [[5n, 9n]] }, 12n)).toEqual({ cursor: 2n, until: undefined, skip: [[5n, 12n]] });
    expect(normalize({ cursor: 5n, until: undefined, skip: [[5n, 9n], [11n, 12n]] })).toEqual({ cursor: 9n, until: undefined, skip: [[11n, 12n]] });
    expect(finished({ cursor: 3n, until: 9n, skip: [[3n, 9n]] })).toBe(true);
  });

  it("golden: a membership document; documents without skip ranges still read", () => {
    const m: Membership = { cursor: 2n, until: undefined, skip: [[5n, 9n]] };
    // {clientId: "c", groupId: "g", cursor: int64 2, until: null, skip: [[int64 5, int64 9]]}
    expect(hex(BSON.serialize(membershipDoc("c", "g", m)))).toBe(
      "6400000002636c69656e744964000200000063000267726f757049640002000000670012637572736f720002000000000000000a756e74696c00" +
        "04736b697000230000000430001b00000012300005000000000000001231000900000000000000000000",
    );
    const back = membershipOf(BSON.deserialize(BSON.serialize(membershipDoc("c", "g", m)), { useBigInt64: true }));
    expect(back).toEqual(m);
    expect(membershipOf({ clientId: "c", groupId: "g", cursor: 4n, until: 6n })).toEqual({ cursor: 4n, until: 6n, skip: [] });
  });
});

describe("MongoDB wake-ups", () => {
  const me = "inst-A";
  const other = "inst-B";
  const key = (id: string) => ({ documentKey: { _id: id } });

  it("ignores the change events of its own writes, whatever their sequence", () => {
    // One transaction of this instance: the upsert's insert carries lastSeq 1, then the update 2 (notified locally as 2).
    const events = [
      { operationType: "insert", ...key("client:dave"), fullDocument: { _id: "client:dave", lastSeq: 1n, w: stamp(me, 7) } },
      { operationType: "update", ...key("client:dave"), updateDescription: { updatedFields: { lastSeq: 2n, w: stamp(me, 8) } } },
    ];
    for (const ev of events) expect(wakeupOf(ev, me)).toBeUndefined();
    // Another instance sees both, in order.
    expect(events.map((ev) => wakeupOf(ev, other))).toEqual([
      { queue: "client:dave", lastSeq: 1n },
      { queue: "client:dave", lastSeq: 2n },
    ]);
  });

  it("a touch (stamp only) asks for a counter read; other events wake nobody", () => {
    expect(wakeupOf({ operationType: "update", ...key("client:kim"), updateDescription: { updatedFields: { w: stamp(other, 1) } } }, me)).toEqual({
      queue: "client:kim",
      lastSeq: undefined,
    });
    // Instance ids are compared as a whole: "inst-A" is not "inst-AB".
    expect(wakeupOf({ operationType: "update", ...key("q"), updateDescription: { updatedFields: { lastSeq: 3n, w: stamp(`${me}B`, 1) } } }, me)).toEqual({
      queue: "q",
      lastSeq: 3n,
    });
    // Counters written before stamps existed count as foreign.
    expect(wakeupOf({ operationType: "update", ...key("q"), updateDescription: { updatedFields: { lastSeq: 4 } } }, me)).toEqual({ queue: "q", lastSeq: 4n });
    for (const ev of [
      { operationType: "delete", ...key("q") },
      { operationType: "invalidate" },
      { operationType: "drop" },
      { operationType: "update", documentKey: { _id: new ObjectId() }, updateDescription: { updatedFields: { lastSeq: 1n } } },
    ]) {
      expect(wakeupOf(ev, me)).toBeUndefined();
    }
  });

  it("polling reports each foreign change once, never this instance's own, and forgets unwatched queues", () => {
    const t = new StampTracker();
    expect(t.observe("q", stamp(other, 1), 1n, me)).toBe(true);
    expect(t.observe("q", stamp(other, 1), 1n, me)).toBe(false);
    expect(t.observe("q", stamp(me, 1), 2n, me)).toBe(false); // own: notified after its commit
    expect(t.observe("q", stamp(other, 2), 2n, me)).toBe(true); // a touch: same sequence, new stamp
    expect(t.observe("legacy", undefined, 5n, me)).toBe(true);
    expect(t.observe("legacy", undefined, 5n, me)).toBe(false);
    expect(t.observe("legacy", undefined, 6n, me)).toBe(true);
    t.retain(new Set(["q"]));
    expect(t.size).toBe(1);
    t.forget("q");
    expect(t.size).toBe(0);
  });
});

describe("MongoDB stored documents", () => {
  it("KeyPackages are numbered in publish order by the client's counter (golden)", () => {
    const docs = keyPackageDocs(
      "alice",
      41n,
      [
        { ref: new Uint8Array([1]), ciphersuite: 1, keyPackage: new Uint8Array([0xa1]) },
        { ref: new Uint8Array([2]), ciphersuite: 2, keyPackage: new Uint8Array([0xa2]), expiresAt: 1700000000000 },
      ],
      { ref: new Uint8Array([3]), ciphersuite: 1, keyPackage: new Uint8Array([0xa3]) },
      1600000000000,
    );
    expect(docs.map((d) => [d.n, d.lastResort])).toEqual([
      [41n, false],
      [42n, false],
      [43n, true],
    ]);
    // {clientId, ciphersuite: 2, ref: bin 02, keyPackage: bin a2, lastResort: false, expiresAt: double, createdAt: double, n: int64 42}
    expect(hex(BSON.serialize(docs[1]!))).toBe(
      "8500000002636c69656e7449640006000000616c6963650010636970686572737569746500020000000572656600010000000002056b65795061636b61676500" +
        "0100000000a2086c6173745265736f72740000016578706972657341740000008056febc78420163726561746564417400000000e876487742126e002a0000" +
        "000000000000",
    );
    const back = keyPackageOf(BSON.deserialize(BSON.serialize(docs[1]!), { promoteBuffers: true }));
    expect(back).toEqual({ clientId: "alice", ref: new Uint8Array([2]), ciphersuite: 2, keyPackage: new Uint8Array([0xa2]), lastResort: false, expiresAt: 1700000000000 });
  });

  it("history entries carry a clamped TTL date next to the expiry (golden)", () => {
    const d = historyDoc("g", 3n, new Uint8Array(0), true, null, [new Uint8Array([9])], 1_000_000, ttlDate(1_000_000, Date.UTC(2030, 0, 1)));
    // {groupId, epoch: int64 3, ratchetTree: bin (empty), treeless: true, groupInfo: null, joiners: [bin 09], expiresAt: 1e6, ttlAt: 2030-01-01T01:00Z}
    expect(hex(BSON.serialize(d))).toBe(
      "800000000267726f75704964000200000067001265706f636800030000000000000005726174636865745472656500000000000008747265656c65737300010a" +
        "67726f7570496e666f00046a6f696e657273000e00000005300001000000000900106578706972657341740040420f000974746c41740080a2fcdab801000000",
    );
    expect((BSON.deserialize(BSON.serialize(d)).ttlAt as Date).toISOString()).toBe("2030-01-01T01:00:00.000Z");
  });

  it("migrations are append-only: the shipped ones keep their place", () => {
    expect(MONGO_MIGRATIONS.slice(0, 3).map((m) => m.name)).toEqual(["initial indexes", "group feeds", "retained snapshots"]);
    expect(new Set(MONGO_MIGRATIONS.map((m) => m.name)).size).toBe(MONGO_MIGRATIONS.length);
  });
});
