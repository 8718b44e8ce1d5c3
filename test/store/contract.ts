// The contract every Store adapter must pass. Adapter test files call
// runStoreContract with a factory that makes a fresh, empty store location
// which can be opened again after close (to check persistence).

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ConsumedKeyPackageError,
  DuplicateKeyPackageError,
  EpochConflictError,
  KeyPackageQuotaError,
  GroupExistsError,
  StoreClosedError,
  StoreRangeError,
  UnknownClientError,
  UnknownGroupError,
  clientQueue,
  groupFeed,
  outboxQueue,
  type Store,
  type WriteOp,
} from "../../src/store/index.js";
import { hardeningContract } from "./contract-harden-ds.js";

export interface StoreHarness {
  /** Open the store at this harness's location (callable again after close). */
  open(): Promise<Store>;
  /** Remove the location. */
  dispose(): Promise<void>;
}

export type StoreFactory = () => Promise<StoreHarness>;

const b = (...xs: number[]): Uint8Array => new Uint8Array(xs);
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (u: Uint8Array): string => new TextDecoder().decode(u);
const ref = (n: number): Uint8Array => {
  const r = new Uint8Array(32);
  new DataView(r.buffer).setUint32(28, n);
  r[0] = 0xab;
  return r;
};

export function runStoreContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
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

    const create = (groupId: string, epoch = 0n, snapshot = text(`snap-${groupId}`)) =>
      store.apply({ ops: [{ kind: "createGroup", groupId, epoch, snapshot, metadata: text("meta") }] });
    const advance = (groupId: string, expectedEpoch: bigint, extra: Partial<{ snapshot: Uint8Array; metadata: Uint8Array }> = {}) =>
      store.apply({ ops: [{ kind: "advanceGroup", groupId, expectedEpoch, logEntry: text(`commit-${expectedEpoch + 1n}`), ...extra }] });

    hardeningContract(
      () => store,
      async () => {
        await store.close();
        return (store = await harness.open());
      },
    );

    describe("groups", () => {
      it("creates and loads a group; a second create fails with GroupExistsError", async () => {
        await create("g1", 0n);
        const g = await store.loadGroup("g1");
        expect(g).toBeDefined();
        expect(g!.epoch).toBe(0n);
        expect(g!.snapshot).toEqual({ epoch: 0n, state: text("snap-g1") });
        expect(g!.log).toEqual([]);
        expect(str(g!.metadata)).toBe("meta");
        await expect(create("g1", 5n)).rejects.toBeInstanceOf(GroupExistsError);
        expect((await store.loadGroup("g1"))!.snapshot.state).toEqual(text("snap-g1"));
        expect(await store.loadGroup("nope")).toBeUndefined();
        expect(await store.groupEpoch("nope")).toBeUndefined();
      });

      it("advances by compare-and-set on the epoch and logs each commit", async () => {
        await create("g", 0n);
        const r1 = await advance("g", 0n);
        expect(r1.epochs).toEqual([{ groupId: "g", epoch: 1n }]);
        await advance("g", 1n);
        await advance("g", 2n);
        const g = (await store.loadGroup("g"))!;
        expect(g.epoch).toBe(3n);
        expect(g.snapshot.epoch).toBe(0n);
        expect(g.log.map((e) => [e.epoch, str(e.entry)])).toEqual([
          [1n, "commit-1"],
          [2n, "commit-2"],
          [3n, "commit-3"],
        ]);
        expect(await store.groupEpoch("g")).toBe(3n);
      });

      it("rejects a stale epoch with EpochConflictError carrying the current epoch", async () => {
        await create("g", 4n);
        await advance("g", 4n);
        const err = await advance("g", 4n).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(EpochConflictError);
        expect((err as EpochConflictError).currentEpoch).toBe(5n);
        expect((err as EpochConflictError).expectedEpoch).toBe(4n);
        expect((err as EpochConflictError).groupId).toBe("g");
        await expect(store.apply({ ops: [{ kind: "checkEpoch", groupId: "g", epoch: 3n }] })).rejects.toBeInstanceOf(EpochConflictError);
        await store.apply({ ops: [{ kind: "checkEpoch", groupId: "g", epoch: 5n }] });
      });

      it("lets exactly one of N concurrent commits for the same epoch win", async () => {
        await create("race", 0n);
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, (_, i) =>
            store.apply({
              ops: [
                { kind: "advanceGroup", groupId: "race", expectedEpoch: 0n, logEntry: text(`c${i}`) },
                { kind: "append", queue: "race-fanout", payload: text(`c${i}`) },
              ],
            }),
          ),
        );
        const won = results.filter((r) => r.status === "fulfilled");
        const lost = results.filter((r) => r.status === "rejected");
        expect(won).toHaveLength(1);
        expect(lost).toHaveLength(19);
        for (const r of lost) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(EpochConflictError);
        const g = (await store.loadGroup("race"))!;
        expect(g.epoch).toBe(1n);
        expect(g.log).toHaveLength(1);
        // Only the winner's fanout exists.
        const q = await store.read("race-fanout", 0n, 100);
        expect(q.map((e) => str(e.payload))).toEqual([str(g.log[0]!.entry)]);
      });

      it("unknown groups fail with UnknownGroupError", async () => {
        const ops: WriteOp[] = [
          { kind: "advanceGroup", groupId: "x", expectedEpoch: 0n, logEntry: b(1) },
          { kind: "checkEpoch", groupId: "x", epoch: 0n },
          { kind: "deleteGroup", groupId: "x" },
          { kind: "snapshotGroup", groupId: "x", epoch: 0n, snapshot: b(1) },
          { kind: "setGroupMetadata", groupId: "x", metadata: b(1) },
          { kind: "addProposal", groupId: "x", epoch: 0n, ref: ref(1), proposal: b(1) },
          { kind: "setFanoutToken", groupId: "x", clientId: "c", token: b(1) },
          { kind: "addHistory", groupId: "x", epoch: 0n, ratchetTree: b(1), joiners: [ref(1)], expiresAt: Date.now() + 1000 },
        ];
        for (const op of ops) await expect(store.apply({ ops: [op] })).rejects.toBeInstanceOf(UnknownGroupError);
      });

      it("a snapshot replaces the log up to its epoch; readGroupLog serves cached states", async () => {
        await create("g", 0n);
        await advance("g", 0n);
        await advance("g", 1n);
        expect((await store.readGroupLog("g", 1n))!.map((e) => e.epoch)).toEqual([2n]);
        expect((await store.readGroupLog("g", 0n))!.map((e) => e.epoch)).toEqual([1n, 2n]);
        await advance("g", 2n, { snapshot: text("full-3") });
        await advance("g", 3n);
        let g = (await store.loadGroup("g"))!;
        expect(g.snapshot).toEqual({ epoch: 3n, state: text("full-3") });
        expect(g.log.map((e) => e.epoch)).toEqual([4n]);
        expect(g.epoch).toBe(4n);
        // The log no longer reaches epoch 1: the caller must reload.
        expect(await store.readGroupLog("g", 1n)).toBeUndefined();
        expect((await store.readGroupLog("g", 3n))!.map((e) => e.epoch)).toEqual([4n]);
        expect(await store.readGroupLog("g", 4n)).toEqual([]);
        expect(await store.readGroupLog("nope", 0n)).toBeUndefined();

        // Compaction at the current epoch, guarded by CAS.
        await expect(store.apply({ ops: [{ kind: "snapshotGroup", groupId: "g", epoch: 3n, snapshot: b(9) }] })).rejects.toBeInstanceOf(
          EpochConflictError,
        );
        await store.apply({ ops: [{ kind: "snapshotGroup", groupId: "g", epoch: 4n, snapshot: text("full-4") }] });
        g = (await store.loadGroup("g"))!;
        expect(g.snapshot).toEqual({ epoch: 4n, state: text("full-4") });
        expect(g.log).toEqual([]);
        expect(g.epoch).toBe(4n);
      });

      it("updates metadata with or without an epoch guard", async () => {
        await create("g", 2n);
        await store.apply({ ops: [{ kind: "setGroupMetadata", groupId: "g", metadata: text("m2") }] });
        expect(str((await store.loadGroup("g"))!.metadata)).toBe("m2");
        await expect(
          store.apply({ ops: [{ kind: "setGroupMetadata", groupId: "g", expectedEpoch: 1n, metadata: text("m3") }] }),
        ).rejects.toBeInstanceOf(EpochConflictError);
        await advance("g", 2n, { metadata: text("m4") });
        expect(str((await store.loadGroup("g"))!.metadata)).toBe("m4");
        await advance("g", 3n);
        expect(str((await store.loadGroup("g"))!.metadata)).toBe("m4");
      });

      it("lists group ids in pages", async () => {
        for (const id of ["c", "a", "e", "b", "d"]) await create(id);
        expect(await store.listGroups()).toEqual(["a", "b", "c", "d", "e"]);
        expect(await store.listGroups({ limit: 2 })).toEqual(["a", "b"]);
        expect(await store.listGroups({ after: "b", limit: 2 })).toEqual(["c", "d"]);
        expect(await store.listGroups({ after: "e" })).toEqual([]);
      });

      it("deleting a group cascades to log, snapshot, proposals, history and tokens", async () => {
        await create("g", 0n);
        await advance("g", 0n);
        await store.apply({
          ops: [
            { kind: "addProposal", groupId: "g", epoch: 1n, ref: ref(1), proposal: b(1) },
            { kind: "addHistory", groupId: "g", epoch: 1n, ratchetTree: b(7), joiners: [ref(2)], expiresAt: Date.now() + 60_000 },
            { kind: "setFanoutToken", groupId: "g", clientId: "alice", token: b(3) },
          ],
        });
        await create("other", 0n);
        await store.apply({ ops: [{ kind: "setFanoutToken", groupId: "other", clientId: "alice", token: b(4) }] });

        await expect(store.apply({ ops: [{ kind: "deleteGroup", groupId: "g", expectedEpoch: 0n }] })).rejects.toBeInstanceOf(
          EpochConflictError,
        );
        await store.apply({ ops: [{ kind: "deleteGroup", groupId: "g", expectedEpoch: 1n }] });
        expect(await store.loadGroup("g")).toBeUndefined();
        expect(await store.listGroups()).toEqual(["other"]);
        expect(await store.listProposals("g", 1n)).toEqual([]);
        expect(await store.listHistory("g")).toEqual([]);
        expect(await store.historyForJoiner("g", ref(2))).toBeUndefined();
        expect((await store.fanoutTokens("g")).size).toBe(0);
        // Other groups untouched.
        expect(await store.fanoutToken("other", "alice")).toEqual(b(4));

        // The id can be reused from scratch.
        await create("g", 0n, text("new"));
        const g = (await store.loadGroup("g"))!;
        expect(g.log).toEqual([]);
        expect(g.snapshot.state).toEqual(text("new"));
        await advance("g", 0n);
        expect((await store.loadGroup("g"))!.log).toHaveLength(1);
      });

      it("rejects epochs outside [0, 2^63-1]", async () => {
        await expect(create("g", -1n)).rejects.toBeInstanceOf(StoreRangeError);
        await expect(create("g", 1n << 63n)).rejects.toBeInstanceOf(StoreRangeError);
        await create("g", (1n << 63n) - 1n);
        await expect(advance("g", (1n << 63n) - 1n)).rejects.toBeInstanceOf(StoreRangeError);
      });
    });

    describe("atomicity", () => {
      it("a batch with a failing precondition changes nothing", async () => {
        await create("g", 0n);
        await store.apply({ ops: [{ kind: "putClient", clientId: "bob", signaturePublicKey: b(1) }] });
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId: "bob", keyPackages: [{ ref: ref(1), ciphersuite: 1, keyPackage: b(1) }] }],
        });
        const before = await store.loadGroup("g");
        await expect(
          store.apply({
            ops: [
              { kind: "append", queue: "q", payload: b(1) },
              { kind: "consumeKeyPackage", clientId: "bob" },
              { kind: "setFanoutToken", groupId: "g", clientId: "bob", token: b(2) },
              { kind: "addProposal", groupId: "g", epoch: 0n, ref: ref(9), proposal: b(9) },
              { kind: "createGroup", groupId: "g2", epoch: 0n, snapshot: b(0) },
              { kind: "markProcessed", source: "hub.example", sequence: 1n },
              { kind: "advanceGroup", groupId: "g", expectedEpoch: 7n, logEntry: b(1) },
            ],
          }),
        ).rejects.toBeInstanceOf(EpochConflictError);
        expect(await store.loadGroup("g")).toEqual(before);
        expect(await store.loadGroup("g2")).toBeUndefined();
        expect(await store.queueInfo("q")).toEqual({ lastSeq: 0n, firstSeq: undefined, length: 0 });
        expect(await store.countKeyPackages("bob")).toBe(1);
        expect(await store.fanoutToken("g", "bob")).toBeUndefined();
        expect(await store.listProposals("g", 0n)).toEqual([]);
        expect(await store.isProcessed("hub.example", 1n)).toBe(false);
        // The sequence counter did not move either: the next append gets 1.
        const r = await store.apply({ ops: [{ kind: "append", queue: "q", payload: b(2) }] });
        expect(r.appended).toEqual([{ queue: "q", seq: 1n }]);
      });

      it("many concurrent batches, one failing its precondition: the others commit, it alone rolls back", async () => {
        await create("g", 0n);
        const n = 40;
        const bad = 17;
        const results = await Promise.allSettled(
          Array.from({ length: n }, (_, i) =>
            store.apply({
              ops: [
                // The failing batch appends first, so its rollback must also give the sequence back.
                { kind: "append", queue: "q", payload: b(i) },
                { kind: "append", queue: `own-${i}`, payload: b(i) },
                { kind: "checkEpoch", groupId: "g", epoch: i === bad ? 5n : 0n },
              ],
            }),
          ),
        );
        const failed = results[bad]!;
        expect(failed.status).toBe("rejected");
        expect((failed as PromiseRejectedResult).reason).toBeInstanceOf(EpochConflictError);
        expect(((failed as PromiseRejectedResult).reason as EpochConflictError).currentEpoch).toBe(0n);
        const seqs: bigint[] = [];
        results.forEach((r, i) => {
          if (i === bad) return;
          expect(r.status).toBe("fulfilled");
          const w = (r as PromiseFulfilledResult<Awaited<ReturnType<Store["apply"]>>>).value;
          expect(w.appended[1]).toEqual({ queue: `own-${i}`, seq: 1n });
          seqs.push(w.appended[0]!.seq);
        });
        // Gap-free: the n-1 committed batches hold 1..n-1 of q; the failed one left no hole.
        expect([...seqs].sort((x, y) => (x < y ? -1 : 1))).toEqual(Array.from({ length: n - 1 }, (_, i) => BigInt(i + 1)));
        if (store.appliesInOrder === true) expect(seqs).toEqual(Array.from({ length: n - 1 }, (_, i) => BigInt(i + 1)));
        expect(await store.queueInfo("q")).toEqual({ lastSeq: BigInt(n - 1), firstSeq: 1n, length: n - 1 });
        expect(await store.queueInfo(`own-${bad}`)).toEqual({ lastSeq: 0n, firstSeq: undefined, length: 0 });
        const payloads = (await store.read("q", 0n, 100)).map((e) => e.payload[0]);
        expect(payloads).not.toContain(bad);
        expect(payloads).toHaveLength(n - 1);
      });

      it("ops of one batch see each other's effects in order", async () => {
        const r = await store.apply({
          ops: [
            { kind: "createGroup", groupId: "g", epoch: 0n, snapshot: b(0) },
            { kind: "advanceGroup", groupId: "g", expectedEpoch: 0n, logEntry: b(1) },
            { kind: "advanceGroup", groupId: "g", expectedEpoch: 1n, logEntry: b(2) },
            { kind: "append", queue: "q", payload: b(1) },
            { kind: "append", queue: "q2", payload: b(1) },
            { kind: "append", queue: "q", payload: b(2) },
          ],
        });
        expect(r.epochs).toEqual([
          { groupId: "g", epoch: 1n },
          { groupId: "g", epoch: 2n },
        ]);
        expect(r.appended).toEqual([
          { queue: "q", seq: 1n },
          { queue: "q2", seq: 1n },
          { queue: "q", seq: 2n },
        ]);
        expect(r.duplicate).toBe(false);
      });
    });

    describe("pending proposals", () => {
      it("stores proposals per epoch by ref and clears them when the epoch advances", async () => {
        await create("g", 3n);
        await store.apply({
          ops: [
            { kind: "checkEpoch", groupId: "g", epoch: 3n },
            { kind: "addProposal", groupId: "g", epoch: 3n, ref: ref(2), proposal: text("p2") },
            { kind: "addProposal", groupId: "g", epoch: 3n, ref: ref(1), proposal: text("p1") },
          ],
        });
        // Idempotent per ref.
        await store.apply({ ops: [{ kind: "addProposal", groupId: "g", epoch: 3n, ref: ref(2), proposal: text("p2") }] });
        let ps = await store.listProposals("g", 3n);
        expect(ps.map((p) => str(p.proposal))).toEqual(["p2", "p1"]);
        expect(ps[0]!.ref).toEqual(ref(2));
        expect(ps[0]!.epoch).toBe(3n);
        expect(await store.listProposals("g", 4n)).toEqual([]);

        await store.apply({ ops: [{ kind: "removeProposal", groupId: "g", ref: ref(2) }] });
        ps = await store.listProposals("g", 3n);
        expect(ps.map((p) => str(p.proposal))).toEqual(["p1"]);

        await advance("g", 3n);
        expect(await store.listProposals("g", 3n)).toEqual([]);
        await store.apply({ ops: [{ kind: "addProposal", groupId: "g", epoch: 4n, ref: ref(1), proposal: text("p1@4") }] });
        expect((await store.listProposals("g", 4n)).map((p) => str(p.proposal))).toEqual(["p1@4"]);
      });

      it("keeps when each proposal was stored; storing it again keeps the first time", async () => {
        await create("g", 0n);
        const before = Date.now();
        await store.apply({ ops: [{ kind: "addProposal", groupId: "g", epoch: 0n, ref: ref(1), proposal: text("p1") }] });
        const after = Date.now();
        const [p] = await store.listProposals("g", 0n);
        expect(p!.createdAt).toBeGreaterThanOrEqual(before);
        expect(p!.createdAt).toBeLessThanOrEqual(after);
        await sleep(5);
        await store.apply({ ops: [{ kind: "addProposal", groupId: "g", epoch: 0n, ref: ref(1), proposal: text("p1") }] });
        expect((await store.listProposals("g", 0n))[0]!.createdAt).toBe(p!.createdAt);
      });
    });

    describe("group tombstones", () => {
      it("a deleted group's id stays taken until its tombstone expires and is purged", async () => {
        await create("g", 2n);
        const until = Date.now() + 3_600_000;
        await store.apply({ ops: [{ kind: "deleteGroup", groupId: "g", expectedEpoch: 2n, tombstoneUntil: until }] });
        expect(await store.loadGroup("g")).toBeUndefined();
        const err = await create("g", 0n).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(GroupExistsError);
        expect((err as GroupExistsError).deleted).toBe(true);
        expect(await store.loadGroup("g")).toBeUndefined();
        expect((await store.purgeExpired(until - 1)).tombstones).toBe(0);
        await expect(create("g", 0n)).rejects.toBeInstanceOf(GroupExistsError);
        expect((await store.purgeExpired(until)).tombstones).toBe(1);
        await create("g", 0n);
        expect((await store.loadGroup("g"))!.epoch).toBe(0n);
      });

      it("an expired tombstone does not refuse the id; a delete without one leaves none", async () => {
        await create("a", 0n);
        await create("b", 0n);
        await store.apply({ ops: [{ kind: "deleteGroup", groupId: "a", tombstoneUntil: Date.now() - 1 }, { kind: "deleteGroup", groupId: "b" }] });
        await create("a", 1n);
        await create("b", 1n);
        expect((await store.purgeExpired()).tombstones).toBe(1);
      });
    });

    describe("epoch history for joiners", () => {
      it("a history entry without its tree keeps its epoch rebuildable (older snapshot + log) until it goes", async () => {
        const now = Date.now();
        await create("g", 0n, text("s0"));
        await advance("g", 0n);
        await store.apply({
          ops: [
            { kind: "advanceGroup", groupId: "g", expectedEpoch: 1n, logEntry: text("commit-2") },
            { kind: "addHistory", groupId: "g", epoch: 2n, joiners: [ref(7)], expiresAt: now + 60_000 },
          ],
        });
        await advance("g", 2n, { snapshot: text("s3") });
        await advance("g", 3n);

        const at2 = await store.loadGroupAt("g", 2n);
        expect(at2?.epoch).toBe(2n);
        expect(at2?.snapshot).toEqual({ epoch: 0n, state: text("s0") });
        expect(at2?.log.map((e) => str(e.entry))).toEqual(["commit-1", "commit-2"]);
        expect((await store.historyForJoiner("g", ref(7)))?.ratchetTree).toEqual(new Uint8Array());
        const at4 = await store.loadGroupAt("g", 4n);
        expect(at4?.snapshot.epoch).toBe(3n);
        expect(at4?.log.map((e) => str(e.entry))).toEqual(["commit-4"]);
        // The current state still comes from the newest snapshot.
        const current = await store.loadGroup("g");
        expect(current?.snapshot).toEqual({ epoch: 3n, state: text("s3") });
        expect(current?.log.map((e) => e.epoch)).toEqual([4n]);
        expect(await store.loadGroupAt("g", 5n)).toBeUndefined();
        expect(await store.loadGroupAt("nope", 0n)).toBeUndefined();

        // Once the joiner fetched it, the next snapshot drops what only it needed.
        await store.apply({ ops: [{ kind: "removeHistoryJoiner", groupId: "g", keyPackageRef: ref(7) }] });
        await advance("g", 4n, { snapshot: text("s5") });
        expect(await store.loadGroupAt("g", 2n)).toBeUndefined();
        expect((await store.loadGroupAt("g", 5n))?.snapshot).toEqual({ epoch: 5n, state: text("s5") });
      });

      it("keeps the tree per epoch until each joiner fetched it", async () => {
        const now = Date.now();
        await create("g", 0n);
        await store.apply({
          ops: [
            { kind: "advanceGroup", groupId: "g", expectedEpoch: 0n, logEntry: b(1) },
            { kind: "addHistory", groupId: "g", epoch: 1n, ratchetTree: text("tree1"), groupInfo: text("gi1"), joiners: [ref(1), ref(2)], expiresAt: now + 60_000 },
          ],
        });
        await store.apply({
          ops: [
            { kind: "advanceGroup", groupId: "g", expectedEpoch: 1n, logEntry: b(2) },
            { kind: "addHistory", groupId: "g", epoch: 2n, ratchetTree: text("tree2"), joiners: [ref(3)], expiresAt: now + 60_000 },
          ],
        });
        const h = (await store.historyForJoiner("g", ref(2)))!;
        expect(h.epoch).toBe(1n);
        expect(str(h.ratchetTree)).toBe("tree1");
        expect(str(h.groupInfo)).toBe("gi1");
        expect(h.joiners).toHaveLength(2);
        expect(h.expiresAt).toBe(now + 60_000);
        expect(str((await store.historyForJoiner("g", ref(3)))!.ratchetTree)).toBe("tree2");
        expect((await store.historyForJoiner("g", ref(3)))!.groupInfo).toEqual(new Uint8Array(0));
        expect(await store.historyForJoiner("g", ref(4))).toBeUndefined();
        expect((await store.listHistory("g")).map((e) => e.epoch)).toEqual([1n, 2n]);

        await store.apply({ ops: [{ kind: "removeHistoryJoiner", groupId: "g", keyPackageRef: ref(1) }] });
        expect(await store.historyForJoiner("g", ref(1))).toBeUndefined();
        expect((await store.historyForJoiner("g", ref(2)))!.joiners).toEqual([ref(2)]);
        // Last joiner of epoch 1 fetched it: the entry goes.
        await store.apply({ ops: [{ kind: "removeHistoryJoiner", groupId: "g", keyPackageRef: ref(2), epoch: 1n }] });
        expect((await store.listHistory("g")).map((e) => e.epoch)).toEqual([2n]);
      });

      it("returns the newest epoch for a joiner listed twice", async () => {
        await create("g", 0n);
        const exp = Date.now() + 60_000;
        await store.apply({
          ops: [
            { kind: "addHistory", groupId: "g", epoch: 1n, ratchetTree: text("t1"), joiners: [ref(1)], expiresAt: exp },
            { kind: "addHistory", groupId: "g", epoch: 5n, ratchetTree: text("t5"), joiners: [ref(1)], expiresAt: exp },
          ],
        });
        expect((await store.historyForJoiner("g", ref(1)))!.epoch).toBe(5n);
        await store.apply({ ops: [{ kind: "removeHistoryJoiner", groupId: "g", keyPackageRef: ref(1), epoch: 5n }] });
        expect((await store.historyForJoiner("g", ref(1)))!.epoch).toBe(1n);
      });

      it("expires entries after the retention period and purges them", async () => {
        const now = 1_000_000;
        await create("g", 0n);
        await store.apply({
          ops: [
            { kind: "addHistory", groupId: "g", epoch: 1n, ratchetTree: b(1), joiners: [ref(1)], expiresAt: now + 10 },
            { kind: "addHistory", groupId: "g", epoch: 2n, ratchetTree: b(2), joiners: [ref(2)], expiresAt: now + 1000 },
          ],
        });
        expect((await store.listHistory("g", now)).map((e) => e.epoch)).toEqual([1n, 2n]);
        expect(await store.historyForJoiner("g", ref(1), now + 10)).toBeUndefined();
        expect((await store.listHistory("g", now + 10)).map((e) => e.epoch)).toEqual([2n]);
        const purged = await store.purgeExpired(now + 10);
        expect(purged.historyEntries).toBe(1);
        expect((await store.listHistory("g", now)).map((e) => e.epoch)).toEqual([2n]);
        expect(await store.historyForJoiner("g", ref(1), now)).toBeUndefined();
        expect((await store.purgeExpired(now + 10)).historyEntries).toBe(0);
      });
    });

    describe("fanout auth tokens", () => {
      it("sets on add, replaces on update, removes on remove", async () => {
        await create("g");
        await store.apply({
          ops: [
            { kind: "setFanoutToken", groupId: "g", clientId: "alice", token: text("a1") },
            { kind: "setFanoutToken", groupId: "g", clientId: "bob", token: text("b1") },
          ],
        });
        await store.apply({ ops: [{ kind: "setFanoutToken", groupId: "g", clientId: "alice", token: text("a2") }] });
        let all = await store.fanoutTokens("g");
        expect([...all.entries()].map(([k, v]) => [k, str(v)])).toEqual([
          ["alice", "a2"],
          ["bob", "b1"],
        ]);
        await store.apply({ ops: [{ kind: "removeFanoutToken", groupId: "g", clientId: "bob" }] });
        await store.apply({ ops: [{ kind: "removeFanoutToken", groupId: "g", clientId: "nobody" }] });
        all = await store.fanoutTokens("g");
        expect([...all.keys()]).toEqual(["alice"]);
        expect(await store.fanoutToken("g", "bob")).toBeUndefined();
        expect(str((await store.fanoutToken("g", "alice"))!)).toBe("a2");
      });
    });

    describe("local clients", () => {
      it("registers, replaces and removes clients", async () => {
        expect(await store.getClient("alice")).toBeUndefined();
        await store.apply({ ops: [{ kind: "putClient", clientId: "alice", signaturePublicKey: b(1, 2), authData: text("secret") }] });
        let c = (await store.getClient("alice"))!;
        expect(c.signaturePublicKey).toEqual(b(1, 2));
        expect(str(c.authData)).toBe("secret");
        expect(typeof c.createdAt).toBe("number");
        await store.apply({ ops: [{ kind: "putClient", clientId: "alice", signaturePublicKey: b(3) }] });
        c = (await store.getClient("alice"))!;
        expect(c.signaturePublicKey).toEqual(b(3));
        expect(c.authData).toEqual(new Uint8Array(0));
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [{ ref: ref(1), ciphersuite: 1, keyPackage: b(1) }] }],
        });
        await store.apply({ ops: [{ kind: "removeClient", clientId: "alice" }] });
        expect(await store.getClient("alice")).toBeUndefined();
        expect(await store.countKeyPackages("alice")).toBe(0);
      });
    });

    describe("KeyPackages", () => {
      const register = (clientId: string) =>
        store.apply({ ops: [{ kind: "putClient", clientId, signaturePublicKey: b(1) }] });

      it("publishing needs a registered client and unique refs", async () => {
        await expect(
          store.apply({ ops: [{ kind: "publishKeyPackages", clientId: "ghost", keyPackages: [{ ref: ref(1), ciphersuite: 1, keyPackage: b(1) }] }] }),
        ).rejects.toBeInstanceOf(UnknownClientError);
        await register("alice");
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [{ ref: ref(1), ciphersuite: 1, keyPackage: b(1) }] }],
        });
        await expect(
          store.apply({
            ops: [
              {
                kind: "publishKeyPackages",
                clientId: "alice",
                keyPackages: [
                  { ref: ref(2), ciphersuite: 1, keyPackage: b(2) },
                  { ref: ref(1), ciphersuite: 1, keyPackage: b(1) },
                ],
              },
            ],
          }),
        ).rejects.toBeInstanceOf(DuplicateKeyPackageError);
        expect(await store.countKeyPackages("alice")).toBe(1); // ref(2) rolled back too
      });

      it("consumes oldest first per ciphersuite; the last-resort package is returned but kept", async () => {
        await register("alice");
        await store.apply({
          ops: [
            {
              kind: "publishKeyPackages",
              clientId: "alice",
              keyPackages: [
                { ref: ref(1), ciphersuite: 1, keyPackage: text("kp1") },
                { ref: ref(2), ciphersuite: 2, keyPackage: text("kp2") },
                { ref: ref(3), ciphersuite: 1, keyPackage: text("kp3") },
              ],
              lastResort: { ref: ref(100), ciphersuite: 1, keyPackage: text("last1") },
            },
          ],
        });
        expect(await store.countKeyPackages("alice")).toBe(3);
        expect(await store.countKeyPackages("alice", 1)).toBe(2);
        const k1 = (await store.consumeKeyPackage("alice", 1))!;
        expect(str(k1.keyPackage)).toBe("kp1");
        expect(k1).toMatchObject({ clientId: "alice", ciphersuite: 1, lastResort: false });
        expect(k1.ref).toEqual(ref(1));
        expect(str((await store.consumeKeyPackage("alice", 1))!.keyPackage)).toBe("kp3");
        for (let i = 0; i < 3; i++) {
          const lr = (await store.consumeKeyPackage("alice", 1))!;
          expect(str(lr.keyPackage)).toBe("last1");
          expect(lr.lastResort).toBe(true);
        }
        expect(await store.consumeKeyPackage("alice", 3)).toBeUndefined();
        expect(str((await store.consumeKeyPackage("alice"))!.keyPackage)).toBe("kp2");
        // Any suite: regular ones exhausted, so the last resort.
        expect(str((await store.consumeKeyPackage("alice"))!.keyPackage)).toBe("last1");
        expect(await store.consumeKeyPackage("bob")).toBeUndefined();
        expect(await store.countKeyPackages("alice")).toBe(0);

        // A new last-resort package replaces the old one of that suite.
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [], lastResort: { ref: ref(101), ciphersuite: 1, keyPackage: text("last2") } }],
        });
        expect(str((await store.consumeKeyPackage("alice", 1))!.keyPackage)).toBe("last2");
        // Re-publishing the same last-resort ref is fine (it replaces itself).
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [], lastResort: { ref: ref(101), ciphersuite: 1, keyPackage: text("last2") } }],
        });
      });

      it("50 parallel consumers of 50 KeyPackages get 50 distinct ones, then the last resort", async () => {
        await register("carol");
        const n = 50;
        await store.apply({
          ops: [
            {
              kind: "publishKeyPackages",
              clientId: "carol",
              keyPackages: Array.from({ length: n }, (_, i) => ({ ref: ref(i), ciphersuite: 1, keyPackage: text(`kp${i}`) })),
              lastResort: { ref: ref(999), ciphersuite: 1, keyPackage: text("last") },
            },
          ],
        });
        const got = await Promise.all(Array.from({ length: n + 10 }, () => store.consumeKeyPackage("carol", 1)));
        const regular = got.filter((k) => k && !k.lastResort).map((k) => str(k!.keyPackage));
        expect(regular).toHaveLength(n);
        expect(new Set(regular).size).toBe(n);
        const last = got.filter((k) => k?.lastResort);
        expect(last).toHaveLength(10);
        expect(await store.countKeyPackages("carol", 1)).toBe(0);
      });

      it("consumption inside a batch returns results in op order and is atomic with the rest", async () => {
        await register("a");
        await register("b");
        await store.apply({
          ops: [
            { kind: "publishKeyPackages", clientId: "a", keyPackages: [{ ref: ref(1), ciphersuite: 1, keyPackage: text("a1") }] },
            { kind: "publishKeyPackages", clientId: "b", keyPackages: [{ ref: ref(2), ciphersuite: 1, keyPackage: text("b1") }] },
          ],
        });
        const r = await store.apply({
          ops: [
            { kind: "consumeKeyPackage", clientId: "b", ciphersuite: 1 },
            { kind: "consumeKeyPackage", clientId: "nobody", ciphersuite: 1 },
            { kind: "consumeKeyPackage", clientId: "a", ciphersuite: 1 },
          ],
        });
        expect(r.keyPackages.map((k) => (k ? str(k.keyPackage) : undefined))).toEqual(["b1", undefined, "a1"]);
      });

      it("never hands out expired KeyPackages; purge deletes them; delete by ref or all", async () => {
        await register("alice");
        const now = Date.now();
        await store.apply({
          ops: [
            {
              kind: "publishKeyPackages",
              clientId: "alice",
              keyPackages: [
                { ref: ref(1), ciphersuite: 1, keyPackage: text("old"), expiresAt: now - 1 },
                { ref: ref(2), ciphersuite: 1, keyPackage: text("fresh"), expiresAt: now + 3_600_000 },
                { ref: ref(3), ciphersuite: 1, keyPackage: text("forever") },
                { ref: ref(4), ciphersuite: 1, keyPackage: text("four") },
              ],
            },
          ],
        });
        expect(await store.countKeyPackages("alice", 1, now)).toBe(3);
        const k = (await store.consumeKeyPackage("alice", 1))!;
        expect(str(k.keyPackage)).toBe("fresh");
        expect(k.expiresAt).toBe(now + 3_600_000);
        expect((await store.purgeExpired(now)).keyPackages).toBe(1);
        await store.apply({ ops: [{ kind: "deleteKeyPackages", clientId: "alice", refs: [ref(3)] }] });
        expect(str((await store.consumeKeyPackage("alice", 1))!.keyPackage)).toBe("four");
        await store.apply({
          ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [{ ref: ref(5), ciphersuite: 1, keyPackage: b(5) }], lastResort: { ref: ref(6), ciphersuite: 1, keyPackage: b(6) } }],
        });
        await store.apply({ ops: [{ kind: "deleteKeyPackages", clientId: "alice" }] });
        expect(await store.consumeKeyPackage("alice")).toBeUndefined();
      });

      it("a consumed KeyPackage is never published again until its lifetime ends; purge forgets it then", async () => {
        await register("alice");
        const now = Date.now();
        const publish = (...refs: number[]) =>
          store.apply({
            ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: refs.map((n) => ({ ref: ref(n), ciphersuite: 1, keyPackage: b(n), expiresAt: now + 60_000 })) }],
          });
        await publish(1);
        expect(ref(1)).toEqual((await store.consumeKeyPackage("alice"))!.ref);
        // Alone or next to a new package: refused, and the batch changes nothing.
        await expect(publish(1)).rejects.toBeInstanceOf(ConsumedKeyPackageError);
        await expect(publish(2, 1)).rejects.toBeInstanceOf(DuplicateKeyPackageError);
        expect(await store.countKeyPackages("alice")).toBe(0);
        // The last-resort package is not consumed, so it may be published again.
        const lr = { ref: ref(3), ciphersuite: 1, keyPackage: b(3) };
        await store.apply({ ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [], lastResort: lr }] });
        expect((await store.consumeKeyPackage("alice"))!.lastResort).toBe(true);
        await store.apply({ ops: [{ kind: "publishKeyPackages", clientId: "alice", keyPackages: [], lastResort: lr }] });
        // Once the consumed package's lifetime is over, the store forgets it.
        expect((await store.purgeExpired(now + 60_001)).consumedKeyPackages).toBe(1);
      });

      it("maxStored bounds the unexpired regular packages a client holds, atomically", async () => {
        await register("alice");
        const upload = (from: number, n: number, maxStored = 3) =>
          store.apply({
            ops: [
              {
                kind: "publishKeyPackages",
                clientId: "alice",
                keyPackages: Array.from({ length: n }, (_, i) => ({ ref: ref(from + i), ciphersuite: 1, keyPackage: b(from + i) })),
                lastResort: { ref: ref(100 + from), ciphersuite: 1, keyPackage: b(100) },
                maxStored,
              },
            ],
          });
        await upload(1, 2);
        await expect(upload(3, 2)).rejects.toBeInstanceOf(KeyPackageQuotaError);
        expect(await store.countKeyPackages("alice")).toBe(2);
        await upload(3, 1);
        expect(await store.countKeyPackages("alice")).toBe(3);
        // Concurrent uploads cannot overshoot together.
        const results = await Promise.allSettled([upload(10, 1, 4), upload(20, 1, 4), upload(30, 1, 4)]);
        expect(results.filter((r) => r.status === "fulfilled").length).toBe(1);
        expect(await store.countKeyPackages("alice")).toBe(4);
      });
    });

    describe("queues", () => {
      it("assigns gap-free sequences per queue under concurrent appends", async () => {
        const queues = [clientQueue("alice"), outboxQueue("Other.Example")];
        expect(queues[1]).toBe("outbox:other.example");
        const results = await Promise.all(
          Array.from({ length: 60 }, (_, i) =>
            store.apply({
              ops: [
                { kind: "append", queue: queues[i % 2]!, payload: text(`m${i}`) },
                ...(i % 3 === 0 ? [{ kind: "append" as const, queue: queues[1]!, payload: text(`x${i}`) }] : []),
              ],
            }),
          ),
        );
        for (const q of queues) {
          const seqs = results.flatMap((r) => r.appended.filter((a) => a.queue === q).map((a) => a.seq)).sort((x, y) => (x < y ? -1 : 1));
          expect(seqs).toEqual(seqs.map((_, i) => BigInt(i + 1)));
          const entries = await store.read(q, 0n, 1000);
          expect(entries.map((e) => e.seq)).toEqual(seqs);
          expect((await store.queueInfo(q)).lastSeq).toBe(BigInt(seqs.length));
        }
      });

      it("one payload appended to many queues in a batch reads back from each, also after the others are gone", async () => {
        const payload = text("a commit for everyone");
        const queues = ["client:a", "client:b", "client:c", "client:d"];
        const r = await store.apply({
          ops: [
            ...queues.map((queue): WriteOp => ({ kind: "append", queue, payload })),
            { kind: "append", queue: "client:a", payload: text("own") },
            { kind: "append", queue: "client:b", payload },
          ],
        });
        expect(r.appended).toEqual([
          { queue: "client:a", seq: 1n },
          { queue: "client:b", seq: 1n },
          { queue: "client:c", seq: 1n },
          { queue: "client:d", seq: 1n },
          { queue: "client:a", seq: 2n },
          { queue: "client:b", seq: 2n },
        ]);
        await store.ack("client:a", 2n);
        await store.apply({ ops: [{ kind: "deleteQueue", queue: "client:c" }] });
        expect((await store.read("client:b", 0n, 10)).map((e) => str(e.payload))).toEqual(["a commit for everyone", "a commit for everyone"]);
        await store.ack("client:b", 1n);
        expect((await store.read("client:b", 0n, 10)).map((e) => [e.seq, str(e.payload)])).toEqual([[2n, "a commit for everyone"]]);
        await store.ack("client:b", 2n);
        expect((await store.read("client:d", 0n, 10)).map((e) => str(e.payload))).toEqual(["a commit for everyone"]);
        expect(await store.queueInfo("client:d")).toEqual({ lastSeq: 1n, firstSeq: 1n, length: 1 });
      });

      it("reads in bounded pages after a sequence; ack deletes up to it; numbering continues", async () => {
        const q = clientQueue("bob");
        for (let i = 1; i <= 10; i++) await store.apply({ ops: [{ kind: "append", queue: q, payload: text(`m${i}`) }] });
        const page1 = await store.read(q, 0n, 4);
        expect(page1.map((e) => e.seq)).toEqual([1n, 2n, 3n, 4n]);
        expect(str(page1[0]!.payload)).toBe("m1");
        expect(typeof page1[0]!.enqueuedAt).toBe("number");
        expect((await store.read(q, 4n, 4)).map((e) => e.seq)).toEqual([5n, 6n, 7n, 8n]);
        expect((await store.read(q, 8n, 4)).map((e) => e.seq)).toEqual([9n, 10n]);
        expect(await store.read(q, 10n, 4)).toEqual([]);
        expect(await store.read(q, 0n, 0)).toEqual([]);

        expect(await store.ack(q, 3n)).toBe(3);
        expect(await store.queueInfo(q)).toEqual({ lastSeq: 10n, firstSeq: 4n, length: 7 });
        expect((await store.read(q, 0n, 2)).map((e) => e.seq)).toEqual([4n, 5n]);
        expect(await store.ack(q, 3n)).toBe(0);
        await store.apply({ ops: [{ kind: "ack", queue: q, uptoSeq: 10n }] });
        expect(await store.queueInfo(q)).toEqual({ lastSeq: 10n, firstSeq: undefined, length: 0 });
        const r = await store.apply({ ops: [{ kind: "append", queue: q, payload: b(1) }] });
        expect(r.appended[0]!.seq).toBe(11n);
        expect(await store.queueInfo("never")).toEqual({ lastSeq: 0n, firstSeq: undefined, length: 0 });

        await store.apply({ ops: [{ kind: "deleteQueue", queue: q }] });
        expect(await store.queueInfo(q)).toEqual({ lastSeq: 0n, firstSeq: undefined, length: 0 });
      });

      it("a byte bound ends a page before the entry that would exceed it, but never before the first", async () => {
        const q = clientQueue("erin");
        const sizes = [10, 10, 30, 5, 100, 1];
        await store.apply({ ops: sizes.map((n): WriteOp => ({ kind: "append", queue: q, payload: new Uint8Array(n) })) });
        const page = async (after: bigint, maxBytes: number) => (await store.read(q, after, 64, maxBytes)).map((e) => e.seq);
        expect(await page(0n, 25)).toEqual([1n, 2n]);
        expect(await page(0n, 20)).toEqual([1n, 2n]);
        expect(await page(2n, 25)).toEqual([3n]); // one entry larger than the bound is a page of its own
        expect(await page(3n, 1000)).toEqual([4n, 5n, 6n]);
        expect(await page(4n, 50)).toEqual([5n]);
        expect((await store.read(q, 0n, 3, 1000)).length).toBe(3); // the count bound still holds
        expect(await page(6n, 10)).toEqual([]);
      });

      it("wakes subscribers after commit and resolves waitForAppend", async () => {
        const q = clientQueue("dave");
        const seen: bigint[] = [];
        const unsub = store.subscribe(q, (s) => seen.push(s));
        const waiting = store.waitForAppend(q, 0n);
        await store.apply({
          ops: [
            { kind: "append", queue: q, payload: b(1) },
            { kind: "append", queue: q, payload: b(2) },
          ],
        });
        expect(await waiting).toBe(2n);
        await waitUntil(() => seen.length >= 1);
        expect(seen).toEqual([2n]);
        unsub();
        await store.apply({ ops: [{ kind: "append", queue: q, payload: b(3) }] });
        // Already newer: resolves at once.
        expect(await store.waitForAppend(q, 1n)).toBe(3n);
        expect(seen).toEqual([2n]);

        // A failed batch wakes nobody.
        let woke = false;
        const unsub2 = store.subscribe(q, () => {
          woke = true;
        });
        await expect(
          store.apply({ ops: [{ kind: "append", queue: q, payload: b(4) }, { kind: "checkEpoch", groupId: "none", epoch: 0n }] }),
        ).rejects.toBeInstanceOf(UnknownGroupError);
        await sleep(50);
        expect(woke).toBe(false);
        unsub2();

        // Waiting for something newer resolves on the next append only.
        const later = store.waitForAppend(q, 3n);
        let settled = false;
        void later.then(() => (settled = true));
        await sleep(50);
        expect(settled).toBe(false);
        await store.apply({ ops: [{ kind: "append", queue: q, payload: b(5) }] });
        expect(await later).toBe(4n);
      });

      it("waitForAppend rejects on abort and on close", async () => {
        const q = clientQueue("erin");
        const ac = new AbortController();
        const w = store.waitForAppend(q, 0n, ac.signal);
        ac.abort(new Error("client went away"));
        await expect(w).rejects.toThrow("client went away");
        const pre = new AbortController();
        pre.abort(new Error("already"));
        await expect(store.waitForAppend(q, 0n, pre.signal)).rejects.toThrow("already");

        const w2 = store.waitForAppend(q, 0n);
        await sleep(20);
        const closed = expect(w2).rejects.toBeInstanceOf(StoreClosedError);
        await store.close();
        await closed;
        store = await harness.open(); // for afterEach
      });
    });

    describe("group feeds", () => {
      const feed = groupFeed("g");
      const post = (payload: string, except?: string[]) =>
        store.apply({ ops: [{ kind: "append", queue: feed, payload: text(payload), ...(except ? { except } : {}) }] });
      const pull = async (clientId: string, limit?: number) =>
        (await store.apply({ ops: [{ kind: "pullFeeds", clientId, ...(limit !== undefined ? { limit } : {}) }] })).pulled ?? 0;
      const inbox = async (clientId: string) => (await store.read(clientQueue(clientId), 0n, 1000)).map((e) => str(e.payload));

      it("a member receives the entries appended after it joined, minus those excluded for it, in order", async () => {
        await post("before");
        await store.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "alice" }, { kind: "joinFeed", groupId: "g", clientId: "bob" }] });
        await post("m1");
        await post("m2 from alice", ["alice"]);
        await store.apply({ ops: [{ kind: "append", queue: clientQueue("alice"), payload: text("welcome elsewhere") }] });
        await post("m3");
        expect(await store.feedMembers("g")).toEqual(["alice", "bob"]);
        const [m] = await store.feedMemberships("alice");
        expect(m).toEqual({ groupId: "g", head: 4n, cursor: 1n });

        expect(await pull("alice")).toBe(2);
        expect(await inbox("alice")).toEqual(["welcome elsewhere", "m1", "m3"]);
        expect((await store.queueInfo(clientQueue("alice"))).lastSeq).toBe(3n);
        expect(await pull("alice")).toBe(0);
        expect(await pull("bob", 2)).toBe(2);
        expect(await pull("bob", 2)).toBe(1);
        expect(await inbox("bob")).toEqual(["m1", "m2 from alice", "m3"]);
        // Both passed every entry: the feed holds nothing any more, its counter goes on.
        expect((await store.queueInfo(feed)).length).toBe(0);
        await post("m4");
        expect((await store.queueInfo(feed)).lastSeq).toBe(5n);
      });

      it("a member that left gets what was appended before it left, then the membership ends", async () => {
        await store.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "carol" }, { kind: "joinFeed", groupId: "g", clientId: "dave" }] });
        // The commit that removes carol reaches her; nothing after it does.
        await store.apply({
          ops: [
            { kind: "append", queue: feed, payload: text("remove carol") },
            { kind: "leaveFeed", groupId: "g", clientId: "carol" },
          ],
        });
        await post("after");
        expect(await store.feedMembers("g")).toEqual(["dave"]);
        expect((await store.feedMemberships("carol"))[0]).toMatchObject({ cursor: 0n, until: 1n });
        expect(await pull("carol")).toBe(1);
        expect(await inbox("carol")).toEqual(["remove carol"]);
        expect(await store.feedMemberships("carol")).toEqual([]);
        expect(await pull("dave")).toBe(2);
        expect(await inbox("dave")).toEqual(["remove carol", "after"]);
      });

      it("a joiner does not get the entry appended before its join in the same batch; re-joining keeps what was pending", async () => {
        await store.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "erin" }] });
        await store.apply({ ops: [{ kind: "append", queue: feed, payload: text("bye erin") }, { kind: "leaveFeed", groupId: "g", clientId: "erin" }] });
        await store.apply({
          ops: [
            { kind: "append", queue: feed, payload: text("add frank and erin") },
            { kind: "joinFeed", groupId: "g", clientId: "frank" },
            { kind: "joinFeed", groupId: "g", clientId: "erin" },
            { kind: "joinFeed", groupId: "g", clientId: "frank" }, // idempotent
          ],
        });
        await post("hello");
        await pull("erin");
        await pull("frank");
        expect(await inbox("erin")).toEqual(["bye erin", "hello"]);
        expect(await inbox("frank")).toEqual(["hello"]);
      });

      it("leaving without a client id ends every membership (group deleted); entries before it still arrive", async () => {
        await store.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "gus" }, { kind: "joinFeed", groupId: "g", clientId: "hal" }] });
        await store.apply({ ops: [{ kind: "append", queue: feed, payload: text("deleted") }, { kind: "leaveFeed", groupId: "g" }] });
        expect(await store.feedMembers("g")).toEqual([]);
        expect(await pull("gus")).toBe(1);
        expect(await pull("hal")).toBe(1);
        expect(await inbox("hal")).toEqual(["deleted"]);
        expect((await store.queueInfo(feed)).length).toBe(0);
      });

      it("joining a feed tells the client's queue listeners, without an append", async () => {
        const heard: bigint[] = [];
        const unsubscribe = store.subscribe(clientQueue("kim"), (last) => heard.push(last));
        await store.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "kim" }] });
        for (let i = 0; i < 50 && heard.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
        unsubscribe();
        expect(heard).toEqual([0n]);
        expect((await store.queueInfo(clientQueue("kim"))).length).toBe(0);
      });

      it("a feed with no members keeps nothing; pulled entries survive acknowledging the feed's other copies", async () => {
        await post("nobody hears this");
        await store.apply({ ops: [{ kind: "leaveFeed", groupId: "g" }] });
        expect((await store.queueInfo(feed)).length).toBe(0);
        await store.apply({ ops: [{ kind: "joinFeed", groupId: "g", clientId: "ida" }, { kind: "joinFeed", groupId: "g", clientId: "jo" }] });
        await post("shared");
        await pull("ida");
        await store.ack(clientQueue("ida"), 1n);
        await pull("jo");
        expect(await inbox("jo")).toEqual(["shared"]);
        const reopened = await (async () => {
          await store.close();
          return (store = await harness.open());
        })();
        expect((await reopened.read(clientQueue("jo"), 0n, 10)).map((e) => str(e.payload))).toEqual(["shared"]);
      });
    });

    describe("guest-side at-most-once", () => {
      it("records (hub, sequence) with the enqueues it causes; a duplicate applies nothing", async () => {
        const fan = (seq: bigint) =>
          store.apply({
            ops: [
              { kind: "markProcessed", source: "hub.example", sequence: seq },
              { kind: "append", queue: clientQueue("alice"), payload: text(`m${seq}`) },
              { kind: "append", queue: clientQueue("bob"), payload: text(`m${seq}`) },
            ],
          });
        expect(await store.isProcessed("hub.example", 1n)).toBe(false);
        const r1 = await fan(1n);
        expect(r1.duplicate).toBe(false);
        expect(r1.appended).toHaveLength(2);
        const again = await fan(1n);
        expect(again).toEqual({ duplicate: true, appended: [], keyPackages: [], epochs: [] });
        await fan(2n);
        expect((await fan(2n)).duplicate).toBe(true);
        expect((await fan(1n)).duplicate).toBe(true);
        expect(await store.isProcessed("hub.example", 2n)).toBe(true);
        expect(await store.isProcessed("hub.example", 3n)).toBe(false);
        expect(await store.isProcessed("other.example", 1n)).toBe(false);
        expect((await store.read(clientQueue("alice"), 0n, 10)).map((e) => str(e.payload))).toEqual(["m1", "m2"]);
        // Sources are independent.
        expect((await store.apply({ ops: [{ kind: "markProcessed", source: "other.example", sequence: 1n }] })).duplicate).toBe(false);
      });
    });

    describe("rate limits", () => {
      it("counts per key in fixed windows", async () => {
        const rule = { limit: 3, windowMs: 1000 };
        const t0 = 10_000;
        const r = [];
        for (let i = 0; i < 4; i++) r.push(await store.rateLimit("client:alice", rule, t0 + i));
        expect(r.map((x) => x.allowed)).toEqual([true, true, true, false]);
        expect(r.map((x) => x.remaining)).toEqual([2, 1, 0, 0]);
        expect(r[0]!.resetAt).toBe(11_000);
        expect((await store.rateLimit("client:bob", rule, t0)).allowed).toBe(true);
        // Next window.
        const next = await store.rateLimit("client:alice", rule, 11_000);
        expect(next).toEqual({ allowed: true, count: 1, remaining: 2, resetAt: 12_000 });
        // Cost > 1.
        expect((await store.rateLimit("bulk", { limit: 10, windowMs: 1000, cost: 7 }, t0)).allowed).toBe(true);
        expect((await store.rateLimit("bulk", { limit: 10, windowMs: 1000, cost: 7 }, t0)).allowed).toBe(false);
        expect((await store.purgeExpired(12_000)).rateLimits).toBe(3);
        // Concurrent hits never exceed the limit.
        const many = await Promise.all(Array.from({ length: 20 }, () => store.rateLimit("burst", { limit: 5, windowMs: 60_000 }, t0)));
        expect(many.filter((x) => x.allowed)).toHaveLength(5);
      });
    });

    describe("persistence", () => {
      it("reopening after close keeps everything", async () => {
        await create("g", 0n);
        await advance("g", 0n, { snapshot: text("s1") });
        await advance("g", 1n);
        await store.apply({
          ops: [
            { kind: "addProposal", groupId: "g", epoch: 2n, ref: ref(1), proposal: text("p") },
            { kind: "addHistory", groupId: "g", epoch: 2n, ratchetTree: text("t"), joiners: [ref(2)], expiresAt: Date.now() + 60_000 },
            { kind: "setFanoutToken", groupId: "g", clientId: "alice", token: text("tok") },
            { kind: "putClient", clientId: "alice", signaturePublicKey: b(1), authData: b(2) },
            { kind: "publishKeyPackages", clientId: "alice", keyPackages: [{ ref: ref(3), ciphersuite: 1, keyPackage: text("kp") }], lastResort: { ref: ref(4), ciphersuite: 1, keyPackage: text("lr") } },
            { kind: "append", queue: "q", payload: text("m1") },
            { kind: "append", queue: "q", payload: text("m2") },
            { kind: "markProcessed", source: "hub", sequence: 7n },
          ],
        });
        await store.ack("q", 1n);
        await store.rateLimit("k", { limit: 2, windowMs: 3_600_000 }, 0);
        const before = await store.loadGroup("g");
        await store.close();
        await expect(store.loadGroup("g")).rejects.toBeInstanceOf(StoreClosedError);
        await expect(store.apply({ ops: [] })).rejects.toBeInstanceOf(StoreClosedError);
        await store.close(); // idempotent

        store = await harness.open();
        expect(await store.loadGroup("g")).toEqual(before);
        expect((await store.listProposals("g", 2n)).map((p) => str(p.proposal))).toEqual(["p"]);
        expect(str((await store.historyForJoiner("g", ref(2)))!.ratchetTree)).toBe("t");
        expect(str((await store.fanoutToken("g", "alice"))!)).toBe("tok");
        expect((await store.getClient("alice"))!.authData).toEqual(b(2));
        expect(str((await store.consumeKeyPackage("alice", 1))!.keyPackage)).toBe("kp");
        expect(str((await store.consumeKeyPackage("alice", 1))!.keyPackage)).toBe("lr");
        expect((await store.read("q", 0n, 10)).map((e) => [e.seq, str(e.payload)])).toEqual([[2n, "m2"]]);
        expect((await store.apply({ ops: [{ kind: "append", queue: "q", payload: b(0) }] })).appended[0]!.seq).toBe(3n);
        expect(await store.isProcessed("hub", 7n)).toBe(true);
        expect((await store.rateLimit("k", { limit: 2, windowMs: 3_600_000 }, 1)).count).toBe(2);
        await store.ping();
      });

      it("an empty batch is a no-op", async () => {
        expect(await store.apply({ ops: [] })).toEqual({ duplicate: false, appended: [], keyPackages: [], epochs: [] });
      });
    });

    // Cases that pin behaviour the MongoDB adapter got wrong (issue 15); every adapter passes them.
    describe("lifecycle, limits and large values", () => {
      it("calls made before close() finish before the connection goes: an acknowledged write is never reported as closed", async () => {
        // Separate queues: this is about close(), not about contention.
        const queues = Array.from({ length: 20 }, (_, i) => clientQueue(`closer-${i}`));
        const pending = queues.map((queue, i) => store.apply({ ops: [{ kind: "append", queue, payload: b(i) }] }));
        await store.close();
        const done = await Promise.allSettled(pending);
        for (const r of done) expect(r.status === "rejected" ? r.reason : undefined).toBeUndefined();
        store = await harness.open();
        // Everything acknowledged is there.
        for (const [i, queue] of queues.entries()) expect((await store.read(queue, 0n, 10)).map((e) => [e.seq, e.payload[0]])).toEqual([[1n, i]]);
      });

      it("listGroups: a negative limit means no limit, 0 means none", async () => {
        for (const id of ["a", "b", "c"]) await create(id);
        expect(await store.listGroups({ limit: -1 })).toEqual(["a", "b", "c"]);
        expect(await store.listGroups({ after: "a", limit: -5 })).toEqual(["b", "c"]);
        expect(await store.listGroups({ limit: 0 })).toEqual([]);
        expect(await store.listGroups({ limit: Number.MAX_SAFE_INTEGER })).toEqual(["a", "b", "c"]);
      });

      it("compaction (snapshotGroup) does not change updatedAt; apply reports what ack ops deleted", async () => {
        await create("g", 0n);
        const before = (await store.loadGroup("g"))!.updatedAt;
        await sleep(5);
        await store.apply({ ops: [{ kind: "snapshotGroup", groupId: "g", epoch: 0n, snapshot: text("compacted") }] });
        const after = (await store.loadGroup("g"))!;
        expect(after.updatedAt).toBe(before);
        expect(after.snapshot.state).toEqual(text("compacted"));

        for (let i = 0; i < 5; i++) await store.apply({ ops: [{ kind: "append", queue: "acks", payload: b(i) }] });
        const r = await store.apply({ ops: [{ kind: "ack", queue: "acks", uptoSeq: 3n }, { kind: "ack", queue: "acks", uptoSeq: 4n }] });
        expect(r.acked).toBe(4);
        expect((await store.apply({ ops: [{ kind: "ack", queue: "acks", uptoSeq: 4n }] })).acked).toBeUndefined();
        expect(await store.ack("acks", 5n)).toBe(1);
      });

      it("states larger than one MongoDB document (16 MiB) are stored, replaced and read back whole", async () => {
        const MiB = 1024 * 1024;
        const big = (n: number, fill: number) => new Uint8Array(n).map((_, i) => (i * 7 + fill) & 0xff);
        const same = (x: Uint8Array | undefined, y: Uint8Array) => x !== undefined && Buffer.from(x).equals(Buffer.from(y));
        const s0 = big(17 * MiB, 1);
        await create("huge", 0n, s0);
        await store.apply({
          ops: [
            { kind: "advanceGroup", groupId: "huge", expectedEpoch: 0n, logEntry: big(5 * MiB, 2) },
            { kind: "addHistory", groupId: "huge", epoch: 1n, joiners: [ref(1)], expiresAt: Date.now() + 60_000 },
            { kind: "addHistory", groupId: "huge", epoch: 0n, ratchetTree: big(17 * MiB, 3), groupInfo: big(6 * MiB, 4), joiners: [ref(2)], expiresAt: Date.now() + 60_000 },
          ],
        });
        const s2 = big(18 * MiB, 5);
        await advance("huge", 1n, { snapshot: s2 }); // the treeless entry of epoch 1 keeps s0 and the log
        const g = (await store.loadGroup("huge"))!;
        expect(g.epoch).toBe(2n);
        expect(same(g.snapshot.state, s2)).toBe(true);
        const at1 = (await store.loadGroupAt("huge", 1n))!;
        expect(same(at1.snapshot.state, s0)).toBe(true);
        expect(same(at1.log[0]?.entry, big(5 * MiB, 2))).toBe(true);
        const h = (await store.historyForJoiner("huge", ref(2)))!;
        expect(same(h.ratchetTree, big(17 * MiB, 3))).toBe(true);
        expect(same(h.groupInfo, big(6 * MiB, 4))).toBe(true);
        // Replaced and dropped again: a later snapshot once nothing needs the old ones.
        await store.apply({ ops: [{ kind: "removeHistoryJoiner", groupId: "huge", keyPackageRef: ref(1) }] });
        await store.apply({ ops: [{ kind: "snapshotGroup", groupId: "huge", epoch: 2n, snapshot: text("small again") }] });
        expect((await store.loadGroup("huge"))!.snapshot.state).toEqual(text("small again"));
        expect(await store.loadGroupAt("huge", 1n)).toBeUndefined();
        await store.apply({ ops: [{ kind: "deleteGroup", groupId: "huge" }] });
        expect(await store.loadGroup("huge")).toBeUndefined();
      });

      it("a seeded random run of feed appends, joins, leaves and pulls delivers what each member should get, once, in order", async () => {
        let seed = 0x15;
        const rand = (n: number): number => {
          seed = (seed * 1103515245 + 12345) & 0x7fffffff;
          return seed % n;
        };
        const clients = ["ann", "ben", "cat"];
        const feed = groupFeed("rg");
        const inFeed = new Set<string>();
        const expected = new Map(clients.map((c) => [c, [] as string[]]));
        let n = 0;
        for (let step = 0; step < 90; step++) {
          const who = clients[rand(clients.length)]!;
          const r = rand(10);
          if (r < 4) {
            const except = clients.filter(() => rand(4) === 0);
            const payload = `e${++n}`;
            await store.apply({ ops: [{ kind: "append", queue: feed, payload: text(payload), ...(except.length > 0 ? { except } : {}) }] });
            for (const c of inFeed) if (!except.includes(c)) expected.get(c)!.push(payload);
          } else if (r < 6) {
            await store.apply({ ops: [{ kind: "joinFeed", groupId: "rg", clientId: who }] });
            inFeed.add(who);
          } else if (r < 8) {
            // The commit removing a member reaches it, then it leaves.
            const payload = `bye-${who}-${++n}`;
            await store.apply({ ops: [{ kind: "append", queue: feed, payload: text(payload) }, { kind: "leaveFeed", groupId: "rg", clientId: who }] });
            for (const c of inFeed) expected.get(c)!.push(payload);
            inFeed.delete(who);
          } else {
            await store.apply({ ops: [{ kind: "pullFeeds", clientId: who, limit: 1 + rand(3) }] });
          }
          if (step % 10 === 0) expect(await store.feedMembers("rg")).toEqual([...inFeed].sort());
        }
        for (const c of clients) {
          for (let i = 0; i < 200 && ((await store.apply({ ops: [{ kind: "pullFeeds", clientId: c }] })).pulled ?? 0) > 0; i++);
          expect((await store.read(clientQueue(c), 0n, 10_000)).map((e) => str(e.payload)), c).toEqual(expected.get(c));
        }
        // Entries nobody still needs are gone.
        if (inFeed.size === 0) expect((await store.queueInfo(feed)).length).toBe(0);
      });
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(5);
  }
}
