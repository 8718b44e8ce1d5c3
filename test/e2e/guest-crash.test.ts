// A guest DS killed (SIGKILL) in the middle of a hub's fanout stream, with
// several DSFanoutRequests read ahead, checked and partly written but not
// acknowledged, then started again on the same data directory: every message
// reaches every guest client exactly once, in the hub's order, with a
// gap-free queue sequence (issue 16: several requests in flight, delivery by feed).
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Federation, type E2EClient } from "./harness.js";

const A = "a.example";
const B = "b.example";
let fed: Federation;

beforeAll(async () => {
  fed = await Federation.start([A, B]);
});
afterAll(async () => {
  await fed?.close();
});

/** The guest's high-water mark for the hub's stream, read from its SQLite file (the server keeps running; schema v9, docs/storage.md). */
function processedAt(domain: string, hub: string): bigint {
  const db = new Database(join(fed.dataDir(domain), "ds.sqlite"), { readonly: true, fileMustExist: true });
  try {
    db.defaultSafeIntegers(true);
    const row = db.prepare("SELECT last_seq FROM queues WHERE queue = 'processed:' || ?").get(hub) as { last_seq: bigint } | undefined;
    return row?.last_seq ?? 0n;
  } finally {
    db.close();
  }
}

const texts = (rs: readonly unknown[]) => rs.map((r) => (r as { text?: string }).text);
const gapFree = (seqs: readonly bigint[]) => seqs.every((s, i) => i === 0 || s === seqs[i - 1]! + 1n);

describe("guest crash mid-stream", () => {
  it("loses nothing and duplicates nothing when killed with requests in flight", async () => {
    const alice = await fed.client("alice", A);
    const guests: E2EClient[] = [];
    for (const n of ["b1", "b2", "b3"]) guests.push(await fed.client(n, B));
    const ann = await fed.client("ann", A);
    await alice.member.createGroup(await fed.hubSender(A));
    await alice.member.addClients([...guests.map((g) => g.id), ann.id]);
    for (const c of [...guests, ann]) expect((await c.process(1))[0]).toMatchObject({ kind: "joined" });
    // A message from a guest member: the recipient set at B changes (its sender is left out), then back.
    await guests[0]!.member.send("from b1");
    for (const c of [alice, guests[1]!, guests[2]!, ann]) expect(texts(await c.process(1))).toEqual(["from b1"]);

    // The hub piles up fanout for B while B is down.
    await fed.stopDomain(B);
    const total = 100;
    const sent = Array.from({ length: total }, (_, i) => `burst ${i}`);
    for (const t of sent) await alice.member.send(t);
    expect(texts(await ann.process(total, 60_000))).toEqual(sent);

    // B comes back slowed by a fanout rate limit (so the kill lands mid-stream, with entries read
    // ahead and held), and is killed once part of the stream is processed.
    await fed.startDomain(B, ["--fanout-rate-limit", "40/s"]);
    const deadline = Date.now() + 60_000;
    let at = 0n;
    while ((at = processedAt(B, A)) < 30n) {
      if (Date.now() > deadline) throw new Error(`B processed only ${at} entries`);
      await new Promise((r) => setTimeout(r, 10));
    }
    await fed.crashDomain(B);
    const mark = processedAt(B, A);
    // Mid-stream: some of the burst processed, not all (the setup's entries come first).
    expect(mark).toBeGreaterThanOrEqual(30n);
    expect(mark).toBeLessThan(BigInt(total));

    await fed.startDomain(B);
    for (const g of guests) {
      expect(texts(await g.process(total, 60_000)), g.id).toEqual(sent);
      await g.expectQuiet(300);
      expect(gapFree(g.sequences), `${g.id}: ${g.sequences.join(",")}`).toBe(true);
    }
  });
});
