// Store contract, issue 16 part (federation at scale): guest feeds that follow
// a recipient set (setFeedSet with joinFeed / leaveFeed), shared entry
// prefixes of outbox entries (AppendOp.prefix), and the clients version.
// Adapter test files call runScaleContract next to runStoreContract.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  FeedSetConflictError,
  StoreError,
  clientQueue,
  groupFeed,
  outboxQueue,
  type Store,
  type WriteOp,
} from "../../src/store/index.js";
import type { StoreFactory, StoreHarness } from "./contract.js";
import { prng } from "../helpers/prng.js";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (u: Uint8Array): string => new TextDecoder().decode(u);

async function drain(store: Store, clientId: string): Promise<void> {
  while (((await store.apply({ ops: [{ kind: "pullFeeds", clientId }] })).pulled ?? 0) > 0);
}

export function runScaleContract(name: string, factory: StoreFactory): void {
  describe(`Store contract (issue 16): ${name}`, () => {
    let harness: StoreHarness;
    let store: Store;

    beforeEach(async () => {
      harness = await factory();
      store = await harness.open();
    });
    afterEach(async () => {
      await store.close();
      await harness.dispose();
    });

    describe("guest feed recipient sets", () => {
      it("setFeedSet is a compare-and-set: a wrong expectation fails the whole batch with the current id", async () => {
        const feed = "fanout:hub.example:g1";
        expect(await store.feedSet(feed)).toBeUndefined();
        await store.apply({ ops: [{ kind: "setFeedSet", groupId: feed, setId: "s1" }] });
        expect(await store.feedSet(feed)).toBe("s1");
        // The same id again: a check only.
        await store.apply({ ops: [{ kind: "setFeedSet", groupId: feed, expected: "s1", setId: "s1" }] });
        const attempt = store.apply({
          ops: [
            { kind: "joinFeed", groupId: feed, clientId: "c1" },
            { kind: "setFeedSet", groupId: feed, expected: "s0", setId: "s2" },
            { kind: "append", queue: groupFeed(feed), payload: text("lost") },
          ],
        });
        await expect(attempt).rejects.toBeInstanceOf(FeedSetConflictError);
        const err = (await attempt.catch((e: unknown) => e)) as FeedSetConflictError;
        expect(err.expected).toBe("s0");
        expect(err.current).toBe("s1");
        // Nothing of the batch: no membership, no entry, the set unchanged.
        expect(await store.feedMembers(feed)).toEqual([]);
        expect((await store.queueInfo(groupFeed(feed))).lastSeq).toBe(0n);
        expect(await store.feedSet(feed)).toBe("s1");
        // Expecting "none" when one is recorded fails too.
        await expect(store.apply({ ops: [{ kind: "setFeedSet", groupId: feed, setId: "s3" }] })).rejects.toBeInstanceOf(FeedSetConflictError);
      });

      it("a feed that follows changing recipient sets delivers each entry exactly once, in order, to exactly its set (seeded random driver)", async () => {
        const clients = Array.from({ length: 9 }, (_, i) => `c${i}@guest.example`);
        const lastSeq = new Map(clients.map((c) => [c, 0n]));
        for (const seed of [1, 2, 3]) {
          const feed = `fanout:hub.example:g-seed${seed}`;
          const random = prng(seed);
          /** What each client must end up with, in order. */
          const expected = new Map(clients.map((c) => [c, [] as string[]]));
          let members = new Set<string>();
          let setId: string | undefined;
          for (let step = 0; step < 60; step++) {
            const r = random();
            if (r < 0.15) {
              // A reader pulls some of what it has (its queue keeps gap-free numbers).
              await store.apply({ ops: [{ kind: "pullFeeds", clientId: clients[Math.floor(random() * clients.length)]!, limit: 1 + Math.floor(random() * 3) }] });
              continue;
            }
            // The next entry's recipient set: the previous one with a few changes (or the same).
            const next = new Set(members);
            const changes = r < 0.5 ? 0 : 1 + Math.floor(random() * 3);
            for (let k = 0; k < changes; k++) {
              const c = clients[Math.floor(random() * clients.length)]!;
              if (next.has(c)) next.delete(c);
              else next.add(c);
            }
            const id = [...next].sort().join(",") || "(empty)";
            const payload = `seed ${seed} entry ${step}`;
            const ops: WriteOp[] = [{ kind: "setFeedSet", groupId: feed, ...(setId !== undefined ? { expected: setId } : {}), setId: id }];
            for (const c of members) if (!next.has(c)) ops.push({ kind: "leaveFeed", groupId: feed, clientId: c });
            for (const c of next) if (!members.has(c)) ops.push({ kind: "joinFeed", groupId: feed, clientId: c });
            if (next.size > 0) ops.push({ kind: "append", queue: groupFeed(feed), payload: text(payload) });
            await store.apply({ ops });
            if (next.size > 0) for (const c of next) expected.get(c)!.push(payload);
            members = next;
            setId = id;
            expect((await store.feedMembers(feed)).sort()).toEqual([...members].sort());
          }
          for (const c of clients) {
            await drain(store, c);
            const entries = await store.read(clientQueue(c), 0n, 10_000);
            const mine = entries.map((e) => str(e.payload)).filter((p) => p.startsWith(`seed ${seed} `));
            expect(mine, `${c}, seed ${seed}`).toEqual(expected.get(c));
            // One gap-free sequence per client queue, continuing across the runs.
            entries.forEach((e, i) => expect(e.seq).toBe(lastSeq.get(c)! + BigInt(i + 1)));
            if (entries.length > 0) {
              lastSeq.set(c, entries.at(-1)!.seq);
              await store.ack(clientQueue(c), entries.at(-1)!.seq);
            }
          }
        }
      });

      it("keeps the recipient set across a reopen", async () => {
        const feed = "fanout:hub.example:persist";
        await store.apply({
          ops: [
            { kind: "setFeedSet", groupId: feed, setId: "abc" },
            { kind: "joinFeed", groupId: feed, clientId: "p1" },
          ],
        });
        await store.close();
        store = await harness.open();
        expect(await store.feedSet(feed)).toBe("abc");
        expect(await store.feedMembers(feed)).toEqual(["p1"]);
      });
    });

    describe("shared entry prefixes (hub outbox)", () => {
      const create = (groupId: string) =>
        store.apply({ ops: [{ kind: "createGroup", groupId, epoch: 0n, snapshot: text("snap") }] });
      const prefixed = (groupId: string, epoch: bigint, ref: string, prefix: string, payload: string, queue = outboxQueue("guest.example")): WriteOp => ({
        kind: "append",
        queue,
        payload: text(payload),
        prefix: { groupId, epoch, ref, bytes: text(prefix) },
      });
      const readAll = async (queue = outboxQueue("guest.example")) => (await store.read(queue, 0n, 1000)).map((e) => str(e.payload));

      it("readers get prefix || payload; a stored prefix is kept once and reused while its group is at its epoch", async () => {
        await create("g");
        await store.apply({ ops: [prefixed("g", 0n, "r1", "HEAD1|", "m1"), prefixed("g", 0n, "r1", "HEAD1|", "m2")] });
        await store.apply({ ops: [prefixed("g", 0n, "r1", "HEAD1|", "m3"), { kind: "append", queue: outboxQueue("guest.example"), payload: text("plain") }] });
        expect(await readAll()).toEqual(["HEAD1|m1", "HEAD1|m2", "HEAD1|m3", "plain"]);
        // Every entry acknowledged: the prefix stays for the next message of the epoch
        // (bytes given with a ref already stored are not read: the ref names the bytes).
        await store.ack(outboxQueue("guest.example"), 4n);
        await store.apply({ ops: [prefixed("g", 0n, "r1", "IGNORED|", "m4")] });
        expect(await readAll()).toEqual(["HEAD1|m4"]);
        expect((await store.purgeExpired()).prefixes ?? 0).toBe(0);
      });

      it("readers are told which entries start with which prefix (its id and length), without comparing bytes", async () => {
        await create("g");
        await create("h");
        await store.apply({
          ops: [prefixed("g", 0n, "r1", "HEAD1|", "m1"), prefixed("h", 0n, "r2", "OTHER-HEAD|", "m2"), { kind: "append", queue: outboxQueue("guest.example"), payload: text("plain") }],
        });
        await store.apply({ ops: [prefixed("g", 0n, "r1", "HEAD1|", "m3")] });
        const entries = await store.read(outboxQueue("guest.example"), 0n, 1000);
        expect(entries.map((e) => e.prefix?.length)).toEqual([6, 11, undefined, 6]);
        const [a, b, , c] = entries.map((e) => e.prefix?.id);
        expect(a).toBe(c);
        expect(a).not.toBe(b);
        // The same after a reopen (a new reader, no cache).
        await store.close();
        store = await harness.open();
        const again = await store.read(outboxQueue("guest.example"), 0n, 1000);
        expect(again.map((e) => e.prefix?.length)).toEqual([6, 11, undefined, 6]);
        expect(again[0]!.prefix!.id).toBe(again[3]!.prefix!.id);
        expect(again.map((e) => (e.prefix !== undefined ? str(e.payload.subarray(0, e.prefix.length)) : undefined))).toEqual(["HEAD1|", "OTHER-HEAD|", undefined, "HEAD1|"]);
        // The parts, for readers that send a prefix once: bytes || rest is the payload.
        expect(again.map((e) => (e.prefix !== undefined ? [str(e.prefix.bytes), str(e.prefix.rest)] : str(e.payload)))).toEqual([
          ["HEAD1|", "m1"],
          ["OTHER-HEAD|", "m2"],
          "plain",
          ["HEAD1|", "m3"],
        ]);
      });

      it("the group's next commit drops prefixes of older epochs that no entry names; named ones stay until purged", async () => {
        await create("g");
        await store.apply({ ops: [prefixed("g", 0n, "old", "OLD|", "a"), prefixed("g", 0n, "kept", "KEPT|", "b", outboxQueue("other.example"))] });
        await store.ack(outboxQueue("guest.example"), 1n);
        await store.apply({ ops: [{ kind: "advanceGroup", groupId: "g", expectedEpoch: 0n, logEntry: text("c1") }] });
        // "old" went with the commit: a new append under that ref stores the new bytes.
        await store.apply({ ops: [prefixed("g", 0n, "old", "NEW|", "c")] });
        expect(await readAll()).toEqual(["NEW|c"]);
        // "kept" is still named by an unacknowledged entry.
        expect(await readAll(outboxQueue("other.example"))).toEqual(["KEPT|b"]);
        await store.ack(outboxQueue("other.example"), 1n);
        await store.ack(outboxQueue("guest.example"), 2n);
        expect((await store.purgeExpired()).prefixes).toBe(2);
        await store.apply({ ops: [prefixed("g", 1n, "kept", "AGAIN|", "d", outboxQueue("other.example"))] });
        expect(await readAll(outboxQueue("other.example"))).toEqual(["AGAIN|d"]);
      });

      it("deleting the group keeps prefixes entries still name; purge drops them once acknowledged", async () => {
        await create("g");
        await store.apply({ ops: [prefixed("g", 0n, "r", "H|", "x")] });
        await store.apply({ ops: [{ kind: "deleteGroup", groupId: "g" }] });
        expect(await readAll()).toEqual(["H|x"]);
        expect((await store.purgeExpired()).prefixes ?? 0).toBe(0);
        await store.ack(outboxQueue("guest.example"), 1n);
        expect((await store.purgeExpired()).prefixes).toBe(1);
      });

      it("a group feed entry takes no prefix (the batch fails, nothing applied); prefixes survive a reopen", async () => {
        await create("g");
        await expect(
          store.apply({ ops: [{ kind: "append", queue: clientQueue("x"), payload: text("1") }, prefixed("g", 0n, "r", "H|", "f", groupFeed("g"))] }),
        ).rejects.toBeInstanceOf(StoreError);
        expect((await store.queueInfo(clientQueue("x"))).lastSeq).toBe(0n);
        await store.apply({ ops: [prefixed("g", 0n, "r", "H|", "y")] });
        await store.close();
        store = await harness.open();
        expect(await readAll()).toEqual(["H|y"]);
      });
    });

    describe("clients version", () => {
      it("every putClient and removeClient increases it, in their transaction; nothing else does", async () => {
        const v0 = await store.clientsVersion();
        await store.apply({ ops: [{ kind: "putClient", clientId: "a", signaturePublicKey: text("k") }] });
        const v1 = await store.clientsVersion();
        expect(v1).toBeGreaterThan(v0);
        await store.apply({ ops: [{ kind: "append", queue: clientQueue("a"), payload: text("m") }] });
        expect(await store.clientsVersion()).toBe(v1);
        // A failed batch changes nothing, its putClient included.
        await expect(
          store.apply({ ops: [{ kind: "putClient", clientId: "b", signaturePublicKey: text("k") }, { kind: "checkEpoch", groupId: "none", epoch: 0n }] }),
        ).rejects.toBeInstanceOf(StoreError);
        expect(await store.clientsVersion()).toBe(v1);
        await store.apply({ ops: [{ kind: "putClient", clientId: "a", signaturePublicKey: text("k"), authData: text("revoked") }] });
        const v2 = await store.clientsVersion();
        expect(v2).toBeGreaterThan(v1);
        await store.apply({ ops: [{ kind: "removeClient", clientId: "a" }] });
        const v3 = await store.clientsVersion();
        expect(v3).toBeGreaterThan(v2);
        await store.close();
        store = await harness.open();
        expect(await store.clientsVersion()).toBe(v3);
      });
    });
  });
}
