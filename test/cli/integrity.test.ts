// Start-up integrity of the data directory (issue 11): key files made before
// the first start are fine; a database lost beside them, key files lost
// beside a database, another hub key file, and a damaged SQLite file refuse
// to start with one line naming the problem and the override flag; the
// database files are private whatever the directory's mode.
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, open, readFile, rm, stat, truncate, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createService, type Service } from "../../src/cli/compose.js";
import { ConfigError, parseServeArgs } from "../../src/cli/config.js";
import { MARKER_FILE } from "../../src/cli/integrity.js";
import { createDSTransport } from "../../src/client/transport.js";
import { openSqliteStore } from "../../src/store/index.js";
import { runCli } from "../helpers/cli.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { memoryLogger } from "../helpers/server.js";

let dir: string;
let ca: DevCa;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-integrity-"));
  ca = await makeDevCa(["a.example"]);
});
afterAll(async () => {
  await ca?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const args = (dataDir: string, ...extra: string[]): string[] => {
  const a = ca.domain("a.example");
  return ["--domain", "a.example", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--tls-cert", a.certPath, "--tls-key", a.keyPath, "--tls-ca", ca.caPath, ...extra];
};

async function start(dataDir: string, ...extra: string[]): Promise<Service & { lines: Record<string, unknown>[] }> {
  const { logger, lines } = memoryLogger();
  const s = await createService(parseServeArgs(args(dataDir, ...extra), {}), logger, "test");
  return Object.assign(s, { lines });
}

async function refusal(dataDir: string, ...extra: string[]): Promise<string> {
  try {
    const s = await start(dataDir, ...extra);
    await s.close();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    expect(err.message).not.toContain("\n");
    return err.message;
  }
  throw new Error("serve started");
}

async function fanoutKeyOf(s: Service): Promise<string> {
  const t = createDSTransport({ baseUrl: `https://localhost:${s.server.port}`, ca: ca.ca });
  try {
    return Buffer.from((await createClient(HubService, t).hubInfo({ cipherSuite: 1 })).fanoutSignatureKey).toString("base64");
  } finally {
    t.close();
  }
}

/** A data dir that has run once (database, both key files, marker). */
async function usedDataDir(name: string): Promise<string> {
  const data = join(dir, name);
  await (await start(data)).close();
  for (const f of ["ds.sqlite", "hub-keys.json", "fanout-token-key.json", MARKER_FILE]) expect(existsSync(join(data, f)), f).toBe(true);
  return data;
}

describe("start-up integrity", () => {
  it("key files made offline by `mimi-ds keys` start a new DS, whose hub announces the printed key", async () => {
    const data = join(dir, "offline");
    const keys = await runCli(["keys", "--domain", "a.example", "--data-dir", data, "--endpoint", "https://ds.a.example:8443", "--ca", "a-ca.pem"]);
    expect(keys.code, keys.stderr).toBe(0);
    const entry = JSON.parse(keys.stdout) as { domain: string; endpoint: string; ca: string; dsSignatureKey: string };
    expect(entry).toMatchObject({ domain: "a.example", endpoint: "https://ds.a.example:8443", ca: "a-ca.pem" });
    expect(existsSync(join(data, "ds.sqlite"))).toBe(false);
    // Again: the keys are kept.
    const again = await runCli(["keys", "--domain", "a.example", "--data-dir", data]);
    expect(JSON.parse(again.stdout).dsSignatureKey).toBe(entry.dsSignatureKey);
    expect(again.stderr).toContain("kept");

    const s = await start(data);
    try {
      expect(await fanoutKeyOf(s)).toBe(entry.dsSignatureKey);
    } finally {
      await s.close();
    }
    const marker = JSON.parse(await readFile(join(data, MARKER_FILE), "utf8")) as { store: string; fanoutKey: string };
    expect(marker.store).toBe(join(data, "ds.sqlite"));
    expect(marker.fanoutKey).toBe(createHash("sha256").update(Buffer.from(entry.dsSignatureKey, "base64")).digest("base64"));
    // A restart of the same data dir is quiet.
    await (await start(data)).close();
  });

  it("a deleted or emptied database beside the keys refuses, names --allow-empty-database, and creates nothing", async () => {
    const data = await usedDataDir("lost-db");
    await unlink(join(data, "ds.sqlite"));
    expect(await refusal(data)).toMatch(new RegExp(`the database ${data}/ds\\.sqlite is missing, but this data dir had one .*--allow-empty-database`));
    expect(existsSync(join(data, "ds.sqlite"))).toBe(false);

    // Touched (0 bytes), as a careless restore leaves it: refused as empty.
    await (await open(join(data, "ds.sqlite"), "w")).close();
    expect(await refusal(data)).toMatch(/is empty, but this data dir had one .*--allow-empty-database/);

    const s = await start(data, "--allow-empty-database");
    await s.close();
    expect(s.lines.map((l) => l.note)).toContain(`new database ${data}/ds.sqlite beside existing key files`);
    // From now on the new database is the one this data dir had.
    await (await start(data)).close();
  });

  it("a key file deleted beside the database refuses, names --allow-new-keys, and makes no key", async () => {
    const data = await usedDataDir("lost-keys");
    await unlink(join(data, "hub-keys.json"));
    expect(await refusal(data)).toMatch(new RegExp(`the database ${data}/ds\\.sqlite exists but ${data}/hub-keys\\.json is missing: restore it .*--allow-new-keys`));
    expect(existsSync(join(data, "hub-keys.json"))).toBe(false);
    await unlink(join(data, "fanout-token-key.json"));
    expect(await refusal(data)).toMatch(/hub-keys\.json and .*fanout-token-key\.json are missing: restore them/);
    expect(existsSync(join(data, "fanout-token-key.json"))).toBe(false);

    // `mimi-ds keys` does not make them either.
    const keys = await runCli(["keys", "--domain", "a.example", "--data-dir", data]);
    expect(keys.code).toBe(2);
    expect(keys.stderr).toMatch(/already has a database \(database-created\.json\): restore .*hub-keys\.json from a backup, or pass --allow-new-keys/);
    expect(existsSync(join(data, "hub-keys.json"))).toBe(false);

    const s = await start(data, "--allow-new-keys");
    const key = await fanoutKeyOf(s);
    await s.close();
    // The new keys are now the ones on record.
    const again = await start(data);
    expect(await fanoutKeyOf(again)).toBe(key);
    await again.close();

    // A separate --fanout-token-key that is missing counts the same.
    const tokenFile = join(dir, "shared-token-key.json");
    await (await start(data, "--fanout-token-key", tokenFile, "--allow-new-keys")).close();
    await unlink(tokenFile);
    expect(await refusal(data, "--fanout-token-key", tokenFile)).toContain(`${tokenFile} is missing`);
  });

  it("another hub's key file refuses, names --allow-new-keys", async () => {
    const data = await usedDataDir("swapped-keys");
    const other = await usedDataDir("other-keys");
    await copyFile(join(other, "hub-keys.json"), join(data, "hub-keys.json"));
    expect(await refusal(data)).toMatch(/hub-keys\.json is not the hub key file this data dir's database was created with .*--allow-new-keys/);
    await (await start(data, "--allow-new-keys")).close();
    await (await start(data)).close();
  });

  it("a database with 8 KiB of scribbled pages refuses to start (quick_check); so does a scribbled header", async () => {
    const data = await usedDataDir("scribbled");
    const path = join(data, "ds.sqlite");
    // Fill some pages with client records through the store itself.
    const store = await openSqliteStore({ path });
    for (let i = 0; i < 300; i++) {
      await store.apply({ ops: [{ kind: "putClient", clientId: `mimi://a.example/u/${i}/d/1`, signaturePublicKey: new Uint8Array(32).fill(i % 251), authData: new Uint8Array(120).fill(7) }] });
    }
    await store.close();
    expect(existsSync(`${path}-wal`)).toBe(false);
    const pristine = await readFile(path);
    const scribble = async (offset: number): Promise<void> => {
      // Seeded bytes (xorshift): the same damage on every run.
      let x = 0x9e3779b9;
      const junk = Buffer.alloc(8192);
      for (let i = 0; i < junk.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        junk[i] = x & 0xff;
      }
      const f = await open(path, "r+");
      await f.write(junk, 0, junk.length, offset);
      await f.close();
    };
    // Two consecutive pages of the clients table (dbstat names each page's b-tree).
    const db = new Database(path, { readonly: true });
    const pageSize = Number(db.pragma("page_size", { simple: true }));
    const pages = (db.prepare("SELECT pageno FROM dbstat WHERE name = 'clients' ORDER BY pageno").pluck().all() as number[]).map(Number);
    db.close();
    const first = pages.find((p) => pages.includes(p + 1));
    expect(first, "the clients table spans consecutive pages").toBeDefined();
    expect(pageSize * 2).toBe(8192);
    await scribble((first! - 1) * pageSize);
    expect(await refusal(data)).toMatch(new RegExp(`^--store ${path}: the database is damaged \\((quick_check: |SQLITE_CORRUPT).+\\): restore it from a backup`));
    // It is the check that notices: opening the store alone reads only the schema pages.
    await (await start(data, "--skip-quick-check")).close();
    await (await open(path, "w")).writeFile(pristine);
    await (await start(data)).close();

    await scribble(0);
    expect(await refusal(data)).toMatch(/the database is damaged \(SQLITE_NOTADB/);
  });

  it("database files are 0600 in an existing 0755 data dir, and an old 0644 file is made private", async () => {
    const data = join(dir, "open-dir");
    await mkdir(data, { mode: 0o755 });
    await chmod(data, 0o755);
    const s = await start(data);
    try {
      // Running: the WAL and shared-memory files exist.
      for (const f of ["ds.sqlite", "ds.sqlite-wal", "ds.sqlite-shm", "hub-keys.json", "fanout-token-key.json", MARKER_FILE]) {
        expect((await stat(join(data, f))).mode & 0o777, f).toBe(0o600);
      }
      expect((await stat(data)).mode & 0o777).toBe(0o755);
      expect(s.lines.map((l) => l.note)).toContain(`data dir ${data} has mode 755: others may list it (the files in it are 0600)`);
    } finally {
      await s.close();
    }
    await chmod(join(data, "ds.sqlite"), 0o644);
    const again = await start(data);
    try {
      expect((await stat(join(data, "ds.sqlite"))).mode & 0o777).toBe(0o600);
      expect((await stat(join(data, "ds.sqlite-wal"))).mode & 0o777).toBe(0o600);
      expect(again.lines.map((l) => l.note)).toContain(`${join(data, "ds.sqlite")} had mode 644: now 600 (it holds queues, client records and members' tokens)`);
    } finally {
      await again.close();
    }
  });

  it("a truncated database (a partial copy) refuses as damaged", async () => {
    const data = await usedDataDir("truncated");
    const path = join(data, "ds.sqlite");
    const size = (await stat(path)).size;
    await truncate(path, Math.floor(size / 2 / 4096) * 4096 - 1000);
    expect(await refusal(data)).toMatch(/the database is damaged/);
  });
});
