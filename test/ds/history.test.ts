// Epoch history by reference (draft Section 7): the hub keeps no tree per
// Add commit; a joiner's welcome_info tree is the state of its epoch, rebuilt
// from an older snapshot and the epoch log when the group has moved on (here
// past two snapshots: one every 2 commits).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MimiMember } from "../../src/client/index.js";
import { groupKey } from "../../src/ds/groups.js";
import { epochOf, treeHash } from "../../src/mls/index.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let groupId: Uint8Array;

beforeAll(async () => {
  f = await startHub("hub.example", { snapshotInterval: 2 });
  // Welcomes without the tree, so that bob's join takes it from welcome_info.
  alice = await f.member("alice", { welcomeRatchetTree: false });
  bob = await f.member("bob");
  groupId = await alice.createGroup(await f.hubSender());
});
afterAll(() => f?.close());

describe("epoch history", () => {
  it("a joiner fetching its tree after five more commits gets the tree of the epoch it was added in", async () => {
    await alice.add([(await bob.generateKeyPackage()).publicPackage]);
    const entry = (await f.store.listHistory(groupKey(groupId)))[0]!;
    expect(entry.ratchetTree.length).toBe(0); // by reference
    for (let i = 0; i < 5; i++) await alice.update();

    const received = await f.deliver(bob); // Welcome (welcome_info now), then the five commits
    expect(received.map((r) => r.kind)).toEqual(["joined", "commit", "commit", "commit", "commit", "commit"]);
    const g = (await f.hosted(groupId))!;
    expect(bob.epoch).toBe(epochOf(g.state));
    expect(Buffer.from(bob.treeHash).equals(Buffer.from(treeHash(g.state)))).toBe(true);
    // Fetched: the entry and the old snapshot and log it held are gone at the next snapshot.
    expect(await f.store.listHistory(groupKey(groupId))).toEqual([]);
    await alice.update();
    await alice.update();
    expect(await f.store.loadGroupAt(groupKey(groupId), entry.epoch)).toBeUndefined();
  });
});
