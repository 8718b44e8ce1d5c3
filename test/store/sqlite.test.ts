import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
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
      await store.ack("a", 1n);
      await store.apply({ ops: [{ kind: "deleteQueue", queue: "b" }] });
      expect(count("SELECT refs FROM queue_payloads")).toBe(1);
      await store.ack("c", 1n);
      expect(count("SELECT count(*) FROM queue_payloads")).toBe(0);
    } finally {
      await store.close();
    }
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
