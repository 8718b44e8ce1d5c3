import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import {
  MIGRATIONS,
  SCHEMA_VERSION,
  SQLITE_FILE_NAME,
  SchemaTooNewError,
  SqliteStore,
  clientQueue,
  migrate,
  openStore,
  sqlitePathOf,
} from "../../src/store/index.js";
import { prng } from "../helpers/prng.js";
import { runStoreContract } from "./contract.js";
import { runScaleContract } from "./contract-scale.js";

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), "mimi-store-"));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

runStoreContract("sqlite (temp file)", async () => {
  const dir = tempDir();
  return {
    open: () => openStore(`sqlite:${join(dir, "ds.sqlite")}`),
    dispose: async () => rmSync(dir, { recursive: true, force: true }),
  };
});

// The same contract with the writes on the calling thread (what ':memory:' always does).
runStoreContract("sqlite (temp file, inline writer)", async () => {
  const dir = tempDir();
  return {
    open: () => openStore(`sqlite:${join(dir, "ds.sqlite")}`, { writer: "inline" }),
    dispose: async () => rmSync(dir, { recursive: true, force: true }),
  };
});

for (const writer of ["thread", "inline"] as const) {
  runScaleContract(`sqlite (temp file, ${writer} writer)`, async () => {
    const dir = tempDir();
    return {
      open: () => openStore(`sqlite:${join(dir, "ds.sqlite")}`, { writer }),
      dispose: async () => rmSync(dir, { recursive: true, force: true }),
    };
  });
}

/**
 * The stored payloads' reference counts as schema v9 keeps them: a count row
 * only for a payload two or more entries name, holding exactly that number;
 * every other payload named by exactly one entry; none named by no entry.
 */
function expectPayloadCounts(db: Database.Database): void {
  const rows = db
    .prepare(
      `SELECT p.id, r.refs, (SELECT count(*) FROM queue_entries e WHERE e.payload_id = p.id) AS users
       FROM queue_payloads p LEFT JOIN queue_payload_refs r ON r.id = p.id`,
    )
    .all() as { id: bigint | number; refs: bigint | number | null; users: bigint | number }[];
  for (const r of rows) {
    const users = Number(r.users);
    if (r.refs === null) expect(users, `payload ${r.id}: no count row, so one user`).toBe(1);
    else {
      expect(Number(r.refs), `payload ${r.id}: a count row only from two`).toBeGreaterThanOrEqual(2);
      expect(Number(r.refs), `payload ${r.id}: its count`).toBe(users);
    }
  }
  expect(Number(db.prepare("SELECT count(*) FROM queue_payload_refs WHERE id NOT IN (SELECT id FROM queue_payloads)").pluck().get())).toBe(0);
}

describe("SQLite adapter", () => {
  it("runs WAL with synchronous=FULL and busy_timeout", async () => {
    const dir = tempDir();
    const store = (await openStore(dir)) as SqliteStore;
    try {
      const db = store.database;
      expect(db.name).toBe(join(dir, SQLITE_FILE_NAME));
      expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
      expect(Number(db.pragma("synchronous", { simple: true }))).toBe(2); // FULL
      expect(Number(db.pragma("busy_timeout", { simple: true }))).toBe(5000);
      expect(Number(db.pragma("user_version", { simple: true }))).toBe(SCHEMA_VERSION);
    } finally {
      await store.close();
    }
  });

  it("group commit: concurrent applies share one transaction; a lone apply is written at once", async () => {
    const store = (await openStore(tempDir())) as SqliteStore;
    try {
      const payload = new Uint8Array(64);
      await Promise.all(Array.from({ length: 50 }, (_, i) => store.apply({ ops: [{ kind: "append", queue: `q${i % 5}`, payload }] })));
      expect(store.applyStats).toEqual({ transactions: 1, applies: 50 });
      await store.apply({ ops: [{ kind: "append", queue: "q0", payload }] });
      expect(store.applyStats).toEqual({ transactions: 2, applies: 51 });
      // Calls made before close() are written before the connection goes.
      const last = store.apply({ ops: [{ kind: "append", queue: "q0", payload }] });
      await store.close();
      expect((await last).appended).toEqual([{ queue: "q0", seq: 12n }]);
    } finally {
      await store.close();
    }
  });

  it("stores a payload appended to many queues once and frees it with its last entry", async () => {
    const store = (await openStore(tempDir())) as SqliteStore;
    try {
      const payload = new Uint8Array(1000).fill(7);
      await store.apply({ ops: ["a", "b", "c"].map((q) => ({ kind: "append" as const, queue: q, payload })) });
      const db = store.database;
      const count = (sql: string): number => Number(db.prepare(sql).pluck().get());
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(1);
      expect(count("SELECT sum(length(payload)) FROM queue_entries")).toBe(0);
      expectPayloadCounts(db);
      await store.ack("a", 1n);
      expect(count("SELECT refs FROM queue_payload_refs")).toBe(2);
      await store.apply({ ops: [{ kind: "deleteQueue", queue: "b" }] });
      // One user left: no count row.
      expect(count("SELECT count(*) FROM queue_payload_refs")).toBe(0);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(1);
      expectPayloadCounts(db);
      await store.ack("c", 1n);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("stores a message appended to a feed and to prefixed outbox entries once, and frees it with the last of them", async () => {
    const store = (await openStore(tempDir())) as SqliteStore;
    try {
      const db = store.database;
      const count = (sql: string): number => Number(db.prepare(sql).pluck().get());
      await store.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([1]) }] });
      for (let i = 0; i < 3; i++) {
        const message = new Uint8Array(900).fill(i + 1);
        const prefix = { groupId: "g", epoch: 0n, ref: "head-0", bytes: new Uint8Array([0xee, 0xff]) };
        await store.apply({
          ops: [
            { kind: "append", queue: "feed:g", payload: message },
            { kind: "append", queue: "outbox:b.example", payload: message, prefix },
            { kind: "append", queue: "outbox:c.example", payload: message, prefix },
          ],
        });
      }
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(3);
      expect(count("SELECT sum(length(payload)) FROM queue_entries")).toBe(0);
      const read = await store.read("outbox:c.example", 0n, 10);
      expect(read.map((e) => [...e.payload.subarray(0, 3)])).toEqual([
        [0xee, 0xff, 1],
        [0xee, 0xff, 2],
        [0xee, 0xff, 3],
      ]);
      expect(read.every((e) => e.payload.length === 902)).toBe(true);
      expectPayloadCounts(db);
      await store.ack("outbox:b.example", 3n);
      expectPayloadCounts(db);
      await store.ack("feed:g", 3n);
      expectPayloadCounts(db);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(3);
      expect(count("SELECT count(*) FROM queue_payload_refs")).toBe(0);
      await store.ack("outbox:c.example", 2n);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(1);
      await store.ack("outbox:c.example", 3n);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("a feed's message is counted only once copied into members' queues, and freed with the last copy", async () => {
    const store = (await openStore(tempDir())) as SqliteStore;
    try {
      const db = store.database;
      const count = (sql: string): number => Number(db.prepare(sql).pluck().get());
      await store.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([1]) }] });
      await store.apply({ ops: ["ann", "ben", "cid"].map((clientId) => ({ kind: "joinFeed" as const, groupId: "g", clientId })) });
      for (let i = 0; i < 4; i++) await store.apply({ ops: [{ kind: "append", queue: "feed:g", payload: new Uint8Array(500).fill(i) }] });
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(4);
      expect(count("SELECT count(*) FROM queue_payload_refs")).toBe(0);
      for (const c of ["ann", "ben", "cid"]) await store.apply({ ops: [{ kind: "pullFeeds", clientId: c }] });
      // Every member pulled: the feed entries are gone, three copies name each message.
      expect(count("SELECT count(*) FROM queue_entries WHERE queue = 'feed:g'")).toBe(0);
      expect(count("SELECT min(refs) FROM queue_payload_refs")).toBe(3);
      expectPayloadCounts(db);
      await store.ack(clientQueue("ann"), 4n);
      await store.ack(clientQueue("ben"), 2n);
      expectPayloadCounts(db);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(4);
      await store.ack(clientQueue("cid"), 4n);
      expectPayloadCounts(db);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(2);
      expect((await store.read(clientQueue("ben"), 0n, 10)).map((e) => e.payload[0])).toEqual([2, 3]);
      await store.ack(clientQueue("ben"), 4n);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(0);
      expect(count("SELECT count(*) FROM queue_payload_refs")).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("random feeds, shared batches, prefixed outboxes, pulls, acks and deletes: every entry reads back as appended, counts stay exact, nothing leaks", async () => {
    for (const seed of [1, 2, 3, 4]) {
      const rnd = prng(seed);
      const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
      const store = (await openStore(tempDir())) as SqliteStore;
      try {
        const db = store.database;
        const members = ["ann", "ben", "cid"];
        const head = new Uint8Array([0xee, 0xff, seed]);
        const prefix = { groupId: "g", epoch: 0n, ref: "head-0", bytes: head };
        // The model: per queue, what each live sequence must read back as.
        const model = new Map<string, { acked: bigint; last: bigint; entries: Map<bigint, Uint8Array> }>();
        const q = (name: string) => model.get(name) ?? model.set(name, { acked: 0n, last: 0n, entries: new Map() }).get(name)!;
        const push = (name: string, bytes: Uint8Array) => {
          const m = q(name);
          m.last += 1n;
          m.entries.set(m.last, bytes);
        };
        const feed: Uint8Array[] = [];
        const cursor = new Map(members.map((c) => [c, 0]));
        await store.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([1]) }] });
        await store.apply({ ops: members.map((clientId) => ({ kind: "joinFeed" as const, groupId: "g", clientId })) });
        const pull = async (c: string) => {
          await store.apply({ ops: [{ kind: "pullFeeds", clientId: c }] });
          for (const msg of feed.slice(cursor.get(c))) push(clientQueue(c), msg);
          cursor.set(c, feed.length);
        };
        let n = 0;
        for (let step = 0; step < 150; step++) {
          const r = rnd();
          const message = new Uint8Array(200 + Math.floor(rnd() * 900)).fill(++n % 251);
          if (r < 0.35) {
            // A message to the group: the feed, and the outboxes of some guest domains (prefixed).
            const outboxes = ["outbox:b.example", "outbox:c.example"].filter(() => rnd() < 0.7);
            await store.apply({
              ops: [{ kind: "append", queue: "feed:g", payload: message }, ...outboxes.map((queue) => ({ kind: "append" as const, queue, payload: message, prefix }))],
            });
            feed.push(message);
            for (const o of outboxes) push(o, new Uint8Array([...head, ...message]));
          } else if (r < 0.5) {
            // One payload to several queues in one batch (shared).
            const queues = ["q1", "q2", "q3"].filter(() => rnd() < 0.6);
            if (queues.length === 0) continue;
            await store.apply({ ops: queues.map((queue) => ({ kind: "append" as const, queue, payload: message })) });
            for (const name of queues) push(name, message);
          } else if (r < 0.65) await pull(pick(members));
          else if (r < 0.9) {
            const name = pick([...model.keys()].filter((k) => model.get(k)!.last > model.get(k)!.acked));
            if (name === undefined) continue;
            const m = q(name);
            const upTo = m.acked + 1n + BigInt(Math.floor(rnd() * Number(m.last - m.acked)));
            await store.ack(name, upTo);
            for (let sq = m.acked + 1n; sq <= upTo; sq++) m.entries.delete(sq);
            m.acked = upTo;
          } else {
            const name = pick(["q1", "q2", "q3"]);
            await store.apply({ ops: [{ kind: "deleteQueue", queue: name }] });
            model.delete(name);
          }
          expectPayloadCounts(db);
          if (step % 10 === 9 || step === 149)
            for (const [name, m] of model) {
              const read = await store.read(name, m.acked, 1000);
              expect(read.map((e) => e.seq), `seed ${seed} step ${step}: ${name}`).toEqual([...m.entries.keys()]);
              for (const e of read) expect(Buffer.from(e.payload).equals(Buffer.from(m.entries.get(e.seq)!)), `seed ${seed}: ${name} ${e.seq}`).toBe(true);
            }
        }
        // Everyone reads and acknowledges everything: nothing is left stored.
        for (const c of members) await pull(c);
        for (const [name, m] of model) if (m.last > m.acked) await store.ack(name, m.last);
        const count = (sql: string): number => Number(db.prepare(sql).pluck().get());
        expect(count("SELECT count(*) FROM queue_entries"), `seed ${seed}`).toBe(0);
        expect(count("SELECT count(*) FROM queue_payloads"), `seed ${seed}`).toBe(0);
        expect(count("SELECT count(*) FROM queue_payload_refs"), `seed ${seed}`).toBe(0);
      } finally {
        await store.close();
      }
    }
  });

  it("migrates a version 8 database: entries, prefixes and accept-once records kept, leaked payloads freed", async () => {
    const dir = tempDir();
    const path = join(dir, SQLITE_FILE_NAME);
    const old = new Database(path);
    migrate(old, MIGRATIONS.slice(0, 8));
    const now = Date.now();
    const later = now + 3_600_000;
    old.exec(`
      INSERT INTO groups (group_id, epoch, created_at, updated_at) VALUES ('g', 3, 0, 0);
      INSERT INTO group_snapshots (group_id, epoch, state) VALUES ('g', 3, x'01');
      INSERT INTO queues (queue, last_seq) VALUES ('feed:g', 1), ('outbox:b.example', 2), ('client:bob', 1);
      INSERT INTO entry_prefixes (id, group_id, ref, epoch, data) VALUES (1, 'g', 'r', 3, CAST('HEAD' AS BLOB));
      -- What version 8 wrote for a message to the feed and one outbox: the payload counted twice, named once.
      INSERT INTO queue_payloads (id, data, refs) VALUES (1, CAST('shared' AS BLOB), 2);
      INSERT INTO queue_entries (queue, seq, payload, payload_id, enqueued_at) VALUES ('feed:g', 1, x'', 1, 0);
      INSERT INTO queue_entries (queue, seq, payload, enqueued_at, prefix_id) VALUES ('outbox:b.example', 1, CAST('shared' AS BLOB), 0, 1);
      INSERT INTO queue_entries (queue, seq, payload, enqueued_at, prefix_id) VALUES ('outbox:b.example', 2, CAST('other' AS BLOB), 0, 1);
      INSERT INTO queue_entries (queue, seq, payload, enqueued_at) VALUES ('client:bob', 1, CAST('hello' AS BLOB), 0);
      INSERT INTO processed (source, last_seq) VALUES ('fanout:hub.example', 7);
    `);
    const seen = old.prepare("INSERT INTO seen_requests (key, group_id, epoch, expires_at) VALUES (?, ?, ?, ?)");
    const key = (n: number): Buffer => Buffer.alloc(32, n);
    seen.run(key(1), "g", 3, later);
    seen.run(key(2), "g", null, later);
    seen.run(key(3), null, null, later);
    old.close();

    const store = (await openStore(dir)) as SqliteStore;
    try {
      const db = store.database;
      expect(Number(db.pragma("user_version", { simple: true }))).toBe(SCHEMA_VERSION);
      const text = (b: Uint8Array): string => Buffer.from(b).toString();
      expect((await store.read("outbox:b.example", 0n, 10)).map((e) => [e.seq, text(e.payload)])).toEqual([
        [1n, "HEADshared"],
        [2n, "HEADother"],
      ]);
      expect((await store.read("client:bob", 0n, 10)).map((e) => text(e.payload))).toEqual(["hello"]);
      // One user left: no count row (the entry that names it is the one).
      expect(db.prepare("SELECT refs FROM queue_payload_refs WHERE id = 1").get()).toBeUndefined();
      expect(Number(db.prepare("SELECT count(*) FROM queue_payloads WHERE id = 1").pluck().get())).toBe(1);
      expect(await store.isProcessed("fanout:hub.example", 7n)).toBe(true);
      expect(await store.isProcessed("fanout:hub.example", 8n)).toBe(false);
      expect((await store.apply({ ops: [{ kind: "markProcessed", source: "fanout:hub.example", sequence: 7n }] })).duplicate).toBe(true);
      // Sequences continue from the counters.
      const appended = await store.apply({ ops: [{ kind: "append", queue: "outbox:b.example", payload: new Uint8Array([1]) }] });
      expect(appended.appended).toEqual([{ queue: "outbox:b.example", seq: 3n }]);

      const record = (k: Buffer, extra: { groupId?: string; epoch?: bigint; forgetBefore?: bigint } = {}) =>
        store.apply({ ops: [{ kind: "recordRequest", key: k, expiresAt: later, ...extra }] });
      expect((await record(key(1), { groupId: "g", epoch: 3n })).duplicate).toBe(true);
      expect((await record(key(2), { groupId: "g" })).duplicate).toBe(true);
      expect((await record(key(3))).duplicate).toBe(true);
      await record(key(4), { groupId: "g", epoch: 5n, forgetBefore: 4n });
      expect((await record(key(1), { groupId: "g", epoch: 3n })).duplicate).toBe(false); // its epoch was forgotten
      expect((await record(key(2), { groupId: "g" })).duplicate).toBe(true); // no epoch: kept

      // The payload that version 8 leaked goes with the feed entry, its last user.
      await store.ack("feed:g", 1n);
      expect(Number(db.prepare("SELECT count(*) FROM queue_payloads").pluck().get())).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("the schema a fresh database gets is the one pinned in test/fixtures (a change comes with its migration)", () => {
    const file = join(import.meta.dirname, "..", "fixtures", `sqlite-schema-v${SCHEMA_VERSION}.sql`);
    const fresh = new Database(":memory:");
    migrate(fresh);
    const dump = (db: Database.Database): string =>
      (db.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name").pluck().all() as string[])
        .map((sql) => sql.replace(/\s+/g, " ").trim() + ";")
        .join("\n") + "\n";
    const schema = dump(fresh);
    fresh.close();
    if (process.env.MIMI_WRITE_GOLDEN === "1" || !existsSync(file)) {
      if (process.env.CI === "true" && !existsSync(file)) throw new Error(`${file} is missing`);
      writeFileSync(file, schema);
    }
    expect(schema).toBe(readFileSync(file, "utf8"));
  });

  it("parses store URIs", () => {
    expect(sqlitePathOf("sqlite::memory:")).toBe(":memory:");
    expect(sqlitePathOf("sqlite:/a/b.db")).toBe("/a/b.db");
    expect(sqlitePathOf("sqlite:///a/b.db")).toBe("/a/b.db");
    expect(sqlitePathOf("sqlite:rel/b.db")).toBe("rel/b.db");
    expect(sqlitePathOf("data/")).toBe(join("data", SQLITE_FILE_NAME));
    expect(sqlitePathOf("/x/y.sqlite")).toBe("/x/y.sqlite");
    expect(() => sqlitePathOf("redis://x")).toThrow(/unsupported/);
  });

  it("works in memory", async () => {
    const store = await openStore("sqlite::memory:");
    await store.apply({ ops: [{ kind: "append", queue: "q", payload: new Uint8Array([1]) }] });
    expect((await store.queueInfo("q")).lastSeq).toBe(1n);
    await store.close();
  });

  it("migrates step by step and refuses a newer schema", () => {
    const db = new Database(join(tempDir(), "m.sqlite"));
    try {
      const extra = [
        ...MIGRATIONS,
        { name: "test: add column", up: (d: Database.Database) => d.exec("ALTER TABLE clients ADD COLUMN note TEXT") },
      ];
      expect(migrate(db)).toBe(SCHEMA_VERSION);
      expect(migrate(db)).toBe(SCHEMA_VERSION); // idempotent
      expect(migrate(db, extra)).toBe(SCHEMA_VERSION + 1);
      const cols = db.prepare("PRAGMA table_info(clients)").all() as { name: string }[];
      expect(cols.map((c) => c.name)).toContain("note");
      expect(() => migrate(db)).toThrow(SchemaTooNewError);
    } finally {
      db.close();
    }
  });

  it("a failing migration leaves the previous version intact", () => {
    const db = new Database(join(tempDir(), "m.sqlite"));
    try {
      migrate(db);
      const bad = [
        ...MIGRATIONS,
        {
          name: "test: broken",
          up: (d: Database.Database) => {
            d.exec("CREATE TABLE half (x)");
            d.exec("THIS IS NOT SQL");
          },
        },
      ];
      expect(() => migrate(db, bad)).toThrow();
      expect(Number(db.pragma("user_version", { simple: true }))).toBe(SCHEMA_VERSION);
      expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").get()).toBeUndefined();
    } finally {
      db.close();
    }
  });

  it("two connections to one file never hand out a KeyPackage twice", async () => {
    const path = join(tempDir(), "shared.sqlite");
    const a = await openStore(path);
    const b = await openStore(path);
    try {
      await a.apply({ ops: [{ kind: "putClient", clientId: "c", signaturePublicKey: new Uint8Array([1]) }] });
      await a.apply({
        ops: [
          {
            kind: "publishKeyPackages",
            clientId: "c",
            keyPackages: Array.from({ length: 40 }, (_, i) => ({ ref: new Uint8Array([i, 1]), ciphersuite: 1, keyPackage: new Uint8Array([i]) })),
          },
        ],
      });
      const got = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).consumeKeyPackage("c", 1)));
      const ids = got.map((k) => k!.keyPackage[0]);
      expect(new Set(ids).size).toBe(40);
      expect(await b.consumeKeyPackage("c", 1)).toBeUndefined();
      // Sequences stay gap-free across connections.
      const seqs = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).apply({ ops: [{ kind: "append", queue: "q", payload: new Uint8Array([i]) }] })),
      );
      expect(seqs.map((r) => r.appended[0]!.seq).sort((x, y) => Number(x - y))).toEqual(Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe("crash safety", () => {
  it("keeps every acknowledged write across kill -9", async () => {
    const dir = tempDir();
    const uri = `sqlite:${join(dir, "crash.sqlite")}`;
    const child = fileURLToPath(new URL("./crash-child.ts", import.meta.url));
    const run = (killAfterAcks: number) =>
      new Promise<{ seq: bigint; epoch: bigint }[]>((resolve, reject) => {
        const p = spawn(process.execPath, ["--import", "tsx", child, uri], { stdio: ["ignore", "pipe", "pipe"] });
        const acks: { seq: bigint; epoch: bigint }[] = [];
        let buf = "";
        let stderr = "";
        p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        p.stdout.on("data", (d: Buffer) => {
          buf += d.toString();
          let i: number;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line === "ready") continue;
            const [s, e] = line.split(" ");
            acks.push({ seq: BigInt(s!), epoch: BigInt(e!) });
            if (acks.length === killAfterAcks) p.kill("SIGKILL");
          }
        });
        p.on("exit", (code, signal) => {
          if (signal === "SIGKILL") resolve(acks);
          else reject(new Error(`child exited ${code}: ${stderr}`));
        });
      });

    // Twice, so the second run also recovers from the first crash's WAL.
    for (const n of [150, 120]) {
      const acks = await run(n);
      expect(acks.length).toBeGreaterThanOrEqual(n);
      const last = acks[acks.length - 1]!;
      const store = await openStore(uri);
      try {
        const q = clientQueue("crash");
        const info = await store.queueInfo(q);
        expect(info.lastSeq).toBeGreaterThanOrEqual(last.seq);
        const entries = await store.read(q, 0n, 100_000);
        const present = new Set(entries.map((e) => e.seq));
        for (const a of acks) expect(present.has(a.seq)).toBe(true);
        for (const e of entries) expect(new DataView(e.payload.buffer, e.payload.byteOffset).getBigUint64(0)).toBeGreaterThan(0n);
        const g = (await store.loadGroup("crash-group"))!;
        expect(g.epoch).toBeGreaterThanOrEqual(last.epoch);
        // Snapshot + log replay reaches the current epoch without gaps.
        const epochs = g.log.map((e) => e.epoch);
        expect(epochs).toEqual(epochs.map((_, i) => g.snapshot.epoch + BigInt(i + 1)));
        expect(g.snapshot.epoch + BigInt(epochs.length)).toBe(g.epoch);
      } finally {
        await store.close();
      }
    }
  });
});
