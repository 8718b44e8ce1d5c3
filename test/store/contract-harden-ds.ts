// The store contract for the accept-once records (recordRequest), the
// group-owner quota (CreateGroupOp.owner) and queue trimming (trimQueues),
// run by runStoreContract for every adapter (docs/security.md).
import { describe, expect, it } from "vitest";
import { clientQueue, outboxQueue, QuotaExceededError, type Store, type WriteOp } from "../../src/store/index.js";

const key = (n: number): Uint8Array => {
  const k = new Uint8Array(32);
  k[0] = 0x5e;
  new DataView(k.buffer).setUint32(28, n);
  return k;
};
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const later = () => Date.now() + 3_600_000;

export function hardeningContract(current: () => Store, reopen: () => Promise<Store>): void {
  const create = (groupId: string, owner?: { clientId: string; maxGroups: number }) =>
    current().apply({ ops: [{ kind: "createGroup", groupId, epoch: 0n, snapshot: text("s"), ...(owner !== undefined ? { owner } : {}) }] });
  const send = (k: Uint8Array, extra: Partial<Extract<WriteOp, { kind: "recordRequest" }>> = {}) =>
    current().apply({
      ops: [
        { kind: "recordRequest", key: k, expiresAt: later(), ...extra },
        { kind: "append", queue: clientQueue("bob"), payload: text("m") },
      ],
    });
  const bobQueue = async () => (await current().queueInfo(clientQueue("bob"))).lastSeq;

  describe("accept-once records (recordRequest)", () => {
    it("applies a batch once per key; a second one with the key applies nothing and says duplicate", async () => {
      expect((await send(key(1))).duplicate).toBe(false);
      expect(await bobQueue()).toBe(1n);
      const again = await send(key(1));
      expect(again).toEqual({ duplicate: true, appended: [], keyPackages: [], epochs: [] });
      expect(await bobQueue()).toBe(1n);
      expect((await send(key(2))).duplicate).toBe(false);
      expect(await bobQueue()).toBe(2n);
    });

    it("an expired record no longer counts, and purgeExpired removes it", async () => {
      await send(key(3), { expiresAt: Date.now() - 1 });
      expect((await send(key(3))).duplicate).toBe(false);
      const store = current();
      await store.apply({ ops: [{ kind: "recordRequest", key: key(4), expiresAt: Date.now() + 5000 }] });
      expect((await store.purgeExpired(Date.now() + 10_000)).seenRequests).toBe(1);
    });

    it("each new record takes expired ones with it (bounded without a scheduled purge)", async () => {
      const store = current();
      const soon = Date.now() + 200;
      for (let i = 0; i < 20; i++) await store.apply({ ops: [{ kind: "recordRequest", key: key(100 + i), expiresAt: soon }] });
      while (Date.now() <= soon) await new Promise((r) => setTimeout(r, 50));
      // Three new records take up to 8 expired ones each: none of the 20 is left.
      for (let i = 0; i < 3; i++) await store.apply({ ops: [{ kind: "recordRequest", key: key(200 + i), expiresAt: later() }] });
      expect((await store.purgeExpired(Date.now())).seenRequests).toBe(0);
    });

    it("forgets a group's records of epochs below forgetBefore, and all of them with the group", async () => {
      await create("g");
      await send(key(10), { groupId: "g", epoch: 1n });
      await send(key(11), { groupId: "g", epoch: 2n });
      await send(key(12), { groupId: "g", epoch: 4n, forgetBefore: 2n });
      expect((await send(key(10), { groupId: "g", epoch: 1n })).duplicate).toBe(false); // forgotten
      expect((await send(key(11), { groupId: "g", epoch: 2n })).duplicate).toBe(true); // kept
      await current().apply({ ops: [{ kind: "deleteGroup", groupId: "g" }] });
      expect((await send(key(11), { groupId: "g", epoch: 2n })).duplicate).toBe(false);
    });

    it("survives closing and reopening the store", async () => {
      await send(key(20));
      const store = await reopen();
      expect((await store.apply({ ops: [{ kind: "recordRequest", key: key(20), expiresAt: later() }] })).duplicate).toBe(true);
    });

    it("of concurrent batches with one key exactly one applies", async () => {
      const results = await Promise.all(Array.from({ length: 8 }, () => send(key(30))));
      expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    });
  });

  describe("groups per owner (CreateGroupOp.owner)", () => {
    it("refuses a group beyond the owner's quota with QuotaExceededError, nothing applied; a deleted group frees its place", async () => {
      const alice = { clientId: "alice", maxGroups: 2 };
      await create("a1", alice);
      await create("a2", alice);
      await expect(create("a3", alice)).rejects.toBeInstanceOf(QuotaExceededError);
      expect(await current().groupEpoch("a3")).toBeUndefined();
      await create("b1", { clientId: "bob", maxGroups: 2 }); // another owner
      await create("x1"); // no owner: not counted
      await current().apply({ ops: [{ kind: "deleteGroup", groupId: "a1" }] });
      await create("a3", alice);
    });

    it("concurrent creates of one owner never exceed the quota", async () => {
      const owner = { clientId: "carol", maxGroups: 3 };
      const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => create(`c${i}`, owner)));
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
      for (const r of results) if (r.status === "rejected") expect(r.reason).toBeInstanceOf(QuotaExceededError);
    });
  });

  describe("trimQueues", () => {
    it("drops old entries of the queues with the prefix only; sequences continue", async () => {
      const store = current();
      for (let i = 0; i < 5; i++) await store.apply({ ops: [{ kind: "append", queue: outboxQueue("a.example"), payload: text(`a${i}`) }] });
      for (let i = 0; i < 3; i++) await store.apply({ ops: [{ kind: "append", queue: outboxQueue("b.example"), payload: text(`b${i}`) }] });
      await store.apply({ ops: [{ kind: "append", queue: clientQueue("bob"), payload: text("kept") }] });
      expect(await store.trimQueues("outbox:", { keepLast: 2 })).toBe(3 + 1);
      expect((await store.read(outboxQueue("a.example"), 0n, 10)).map((e) => e.seq)).toEqual([4n, 5n]);
      expect((await store.read(outboxQueue("b.example"), 0n, 10)).map((e) => e.seq)).toEqual([2n, 3n]);
      expect(await store.trimQueues("outbox:", { enqueuedBefore: Date.now() + 1000 })).toBe(4);
      expect((await store.queueInfo(outboxQueue("a.example"))).length).toBe(0);
      expect((await store.apply({ ops: [{ kind: "append", queue: outboxQueue("a.example"), payload: text("a5") }] })).appended[0]!.seq).toBe(6n);
      expect((await store.queueInfo(clientQueue("bob"))).length).toBe(1);
      expect(await store.trimQueues("outbox:", { enqueuedBefore: 0 })).toBe(0);
    });
  });
}
