// The storage floor of a bench run: what SQLite itself writes to keep one
// copy of each message durable, committed in as many transactions as the
// measured server made. It is measured in the same run, on the same disk,
// with the adapter's own connection settings (WAL, synchronous=FULL, 4 KB
// pages), so "KB written per message" can be read against it: no schema can
// write less than one row per message per commit through that connection.
//
// A WAL commit writes whole pages (each a frame of page size + 24 bytes), and
// the kernel counts the 4 KB pages a write dirties (/proc/<pid>/io
// write_bytes): one small commit costs about 8 KB, however small its rows.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openConnection } from "../src/store/sqlite/statements.js";

/** Bytes a process (this one: "self") has caused to be written to storage; NaN where /proc is missing. */
export function writeBytesOf(pid: number | "self"): number {
  try {
    const m = /^write_bytes:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}
const ownWriteBytes = (): number => writeBytesOf("self");

/** Rows already in the table before measuring: appends go to a B-tree of realistic depth. */
const WARM_ROWS = 2000;

/**
 * KB written per message when `messages` rows of `rowBytes` each are
 * appended to one rowid table in `transactions` commits (at most one commit
 * per row), checkpoints included (the server's long-run figure includes
 * them too). Synchronous: nothing else of this process writes meanwhile.
 */
export function storeFloorKBPerMessage(dir: string, messages: number, transactions: number, rowBytes: number): number {
  if (messages <= 0) return Number.NaN;
  const root = mkdtempSync(join(dir, "store-floor-"));
  const db = openConnection({ path: join(root, "floor.sqlite") });
  try {
    db.exec("CREATE TABLE floor (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)");
    const insert = db.prepare("INSERT INTO floor (payload) VALUES (?)");
    const commit = db.transaction((rows: number) => {
      for (let i = 0; i < rows; i++) insert.run(randomBytes(rowBytes));
    });
    for (let i = 0; i < WARM_ROWS; i += 50) commit(50);
    db.pragma("wal_checkpoint(TRUNCATE)");
    const commits = Math.max(1, Math.min(messages, Math.round(transactions)));
    const before = ownWriteBytes();
    for (let c = 0; c < commits; c++) commit(Math.floor(((c + 1) * messages) / commits) - Math.floor((c * messages) / commits));
    db.pragma("wal_checkpoint(PASSIVE)");
    return (ownWriteBytes() - before) / 1024 / messages;
  } finally {
    db.close();
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * Checkpoints another process's SQLite file from here (WAL copied into the
 * database, the WAL truncated) and returns the bytes that cost, so that a
 * measuring window can start with no earlier phase's checkpoint debt and end
 * with its own pages counted once in the database: WAL frames written in the
 * window (the server's write_bytes) plus this copy. Call it while the server
 * is idle; it waits for its readers and writers (busy_timeout).
 */
export function checkpointBytes(file: string): number {
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma("busy_timeout = 10000");
    const before = ownWriteBytes();
    const [r] = db.pragma("wal_checkpoint(TRUNCATE)") as { busy: number; log: number; checkpointed: number }[];
    if (r !== undefined && r.busy !== 0) throw new Error(`${file}: the checkpoint was blocked (${r.checkpointed} of ${r.log} frames)`);
    return ownWriteBytes() - before;
  } finally {
    db.close();
  }
}
