// Issue 13 item 10 (second half): outboxes of domains that never fetch them
// are bounded by age and size (src/delivery/outbox-purge.ts). Real SQLite
// store; client queues are never touched; what a peer acknowledged or still
// may fetch within the bounds is kept, and sequence numbers go on.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOutboxPurge } from "../../src/delivery/index.js";
import { openStore } from "../../src/store/index.js";
import { clientQueue, outboxQueue, type Store } from "../../src/store/port.js";
import { memoryLogger } from "../helpers/server.js";

let dir: string;
let store: Store;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-outbox-"));
  store = await openStore(join(dir, "ds.sqlite"));
});
afterAll(async () => {
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

const append = (queue: string, n: number) =>
  store.apply({ ops: Array.from({ length: n }, (_, i) => ({ kind: "append" as const, queue, payload: Uint8Array.of(i) })) });

describe("outbox purge", () => {
  it("keeps at most maxEntries per outbox, drops what is older than maxAgeMs, and leaves client queues alone", async () => {
    // 200 destinations nobody drains (the amplification of the issue), one busy.
    for (let d = 0; d < 200; d++) await append(outboxQueue(`d${d}.example`), 3);
    await append(outboxQueue("busy.example"), 50);
    await append(clientQueue("bob"), 5);
    const { logger, lines } = memoryLogger();
    const purge = startOutboxPurge(store, { maxAgeMs: 60_000, maxEntries: 10, intervalMs: 3_600_000 }, { logger });
    try {
      expect(await purge.runOnce()).toBe(40);
      expect((await store.queueInfo(outboxQueue("busy.example"))).length).toBe(10);
      expect((await store.read(outboxQueue("busy.example"), 0n, 100))[0]!.seq).toBe(41n);
      expect((await store.queueInfo(outboxQueue("d7.example"))).length).toBe(3);
      expect(lines.some((l) => l.msg === "outbox entries nobody fetched were dropped" && l.dropped === 40)).toBe(true);
      // An hour later everything queued now is past its age.
      const later = startOutboxPurge(store, { maxAgeMs: 60_000, maxEntries: 10, intervalMs: 3_600_000 }, { now: () => Date.now() + 3_600_000 });
      expect(await later.runOnce()).toBe(200 * 3 + 10);
      later.stop();
      expect((await store.queueInfo(clientQueue("bob"))).length).toBe(5);
      expect((await append(outboxQueue("busy.example"), 1)).appended[0]!.seq).toBe(51n);
      expect(await purge.runOnce()).toBe(0);
    } finally {
      purge.stop();
    }
  });
});
