// Where a store's WAL pages go: the writes of one send_message (hub) or of
// one DSFanoutRequest (guest), applied through the SQLite adapter in
// transactions of K at a time, and each WAL frame written mapped to the
// B-tree (table or index) that owns its page, via SQLite's dbstat.
//
//   node dist/bench/walpages.js [--role=hub|guest] [--per-commit=K] [--messages=N] [--no-acks]
//
// Hub: the accept-once record, the feed entry for the hub's own members and
// prefixed entries in two guests' outboxes, all of one 1 KB message; after
// each transaction the guests acknowledge what they had (one ack each). Guest:
// the at-most-once mark and the feed entry. Frames are read from the WAL
// after every transaction (a checkpoint restarts the WAL; the new frames are
// counted from its start), so nothing is missed. Prints frames per message
// and per B-tree (docs/performance.md "Fewer B-trees per message").
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { openSqliteStore } from "../src/store/sqlite/store.js";
import type { WriteOp } from "../src/store/port.js";

const arg = (name: string, fallback: string): string => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const role = arg("role", "hub");
const perCommit = Number(arg("per-commit", "4"));
const messages = Number(arg("messages", "200"));
const acks = !process.argv.includes("--no-acks");
const WARM = 300;

/** Pages of the WAL frames written since the last call (salts tell a restarted WAL). */
class WalReader {
  #salt = -1n;
  #seen = 0;
  constructor(readonly path: string) {}
  newPages(): number[] {
    let wal: Buffer;
    try {
      wal = readFileSync(`${this.path}-wal`);
    } catch {
      return [];
    }
    if (wal.length < 32) return [];
    const pageSize = wal.readUInt32BE(8);
    const salt = wal.readBigUInt64BE(16);
    if (salt !== this.#salt) [this.#salt, this.#seen] = [salt, 0];
    const pages: number[] = [];
    let i = 0;
    for (let off = 32; off + 24 + pageSize <= wal.length; off += 24 + pageSize, i++) {
      if (wal.readBigUInt64BE(off + 8) !== salt) break; // a frame of an earlier WAL generation
      if (i >= this.#seen) pages.push(wal.readUInt32BE(off));
    }
    this.#seen = Math.max(this.#seen, i);
    return pages;
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "mimi-walpages-"));
  const path = join(dir, "ds.sqlite");
  const store = await openSqliteStore({ path });
  try {
    await store.apply({ ops: [{ kind: "createGroup", groupId: "g", epoch: 0n, snapshot: new Uint8Array([1]) }] });
    const prefix = { groupId: "g", epoch: 0n, ref: "head-0", bytes: randomBytes(3000) };
    let sequence = 0n;
    const one = (): WriteOp[] => {
      const message = randomBytes(1024);
      if (role === "guest") {
        return [
          { kind: "markProcessed", source: "fanout:hub.example", sequence: ++sequence },
          { kind: "append", queue: "feed:g", payload: message },
        ];
      }
      return [
        { kind: "checkEpoch", groupId: "g", epoch: 0n },
        { kind: "recordRequest", key: randomBytes(32), groupId: "g", epoch: 0n, expiresAt: Date.now() + 7 * 86_400_000 },
        { kind: "append", queue: "feed:g", payload: message, except: ["sender"] },
        { kind: "append", queue: "outbox:b.example", payload: message, prefix },
        { kind: "append", queue: "outbox:c.example", payload: message, prefix },
      ];
    };
    let sent = 0;
    const commit = async (k: number): Promise<void> => {
      // Concurrent applies: the adapter's group commit writes them in one transaction.
      await Promise.all(Array.from({ length: k }, () => store.apply({ ops: one() })));
      sent += k;
      if (role === "hub" && acks) {
        const upto = BigInt(Math.max(0, sent - 8)); // the guests are a few entries behind
        await Promise.all(["outbox:b.example", "outbox:c.example"].map((q) => store.ack(q, upto)));
      }
    };
    for (let i = 0; i < WARM; i += perCommit) await commit(perCommit);
    const wal = new WalReader(path);
    wal.newPages();
    const pages: number[] = [];
    for (let i = 0; i < messages; i += perCommit) {
      await commit(perCommit);
      pages.push(...wal.newPages());
    }
    const db = new Database(path, { readonly: true });
    const owner = new Map<number, string>();
    for (const r of db.prepare("SELECT name, pageno FROM dbstat").all() as { name: string; pageno: number }[]) owner.set(r.pageno, r.name);
    db.close();
    const byTree = new Map<string, number>();
    for (const p of pages) {
      const name = owner.get(p) ?? "(freed since)";
      byTree.set(name, (byTree.get(name) ?? 0) + 1);
    }
    console.log(`${role}: ${messages} messages, ${perCommit} per transaction${role === "hub" ? (acks ? ", acks after each" : ", no acks") : ""}: ${(pages.length / messages).toFixed(2)} WAL frames per message`);
    for (const [name, n] of [...byTree].sort((a, b) => b[1] - a[1])) console.log(`  ${name.padEnd(26)} ${(n / messages).toFixed(2)}`);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
