// Commit rules of the hub beyond RFC 9420 (draft Sections 8 and 9): stored
// proposals must be referenced, stale commits learn the current epoch, and a
// reinitialized group takes no more commits. (The whole flow of operations
// runs against a real process in test/e2e/hub.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DSRequestError, MimiMember } from "../../src/client/index.js";
import { epochOf, treeHash } from "../../src/mls/index.js";
import { DSErrorCode } from "../../src/wire/index.js";
import { proposeAddition } from "../../src/ds/admin.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let carol: MimiMember;
let groupId: Uint8Array;

beforeAll(async () => {
  f = await startHub();
  ({ groupId, members: [alice, bob, carol] } = await f.group("alice", "bob", "carol"));
});
afterAll(() => f?.close());

async function expectInSync(members: MimiMember[]) {
  const g = await f.hosted(groupId);
  for (const m of members) {
    expect(m.epoch, m.clientId).toBe(epochOf(g!.state));
    expect(Buffer.from(m.treeHash).equals(Buffer.from(treeHash(g!.state))), m.clientId).toBe(true);
  }
}

describe("commit rules", () => {
  it("refuses a commit that leaves out a stored proposal (missing_proposals), accepts the one that includes it", async () => {
    await carol.selfRemove();
    await f.deliver(alice);
    const unaware = bob.state;
    await f.deliver(bob);
    const aware = bob.state;
    bob.state = unaware;
    const err = (await bob.update().catch((e: unknown) => e)) as DSRequestError;
    expect(err.code).toBe(DSErrorCode.missing_proposals);
    bob.state = aware;
    await bob.commitPending();
    await f.deliver(alice);
    expect((await f.deliver(carol))[0]).toMatchObject({ kind: "commit", removed: true });
    await expectInSync([alice, bob]);
  });

  it("answers a stale commit with wrong_epoch and the current epoch", async () => {
    const stale = bob.state;
    await alice.update();
    await f.deliver(bob);
    const now = bob.state;
    bob.state = stale;
    const err = (await bob.update().catch((e: unknown) => e)) as DSRequestError;
    expect(err.code).toBe(DSErrorCode.wrong_epoch);
    expect(err.currentEpoch).toBe(alice.epoch);
    bob.state = now;
    await expectInSync([alice, bob]);
  });

  it("a member removed by a commit that also adds (reusing its leaf) learns it was removed (ts-mls patch)", async () => {
    // Found by the fault simulation: ts-mls 1.6.4 took "my leaf is blank after the commit" for "removed",
    // and an Add of the same commit fills the leftmost blank leaf, which is the removed one.
    const gus = await f.member("gus");
    const dave = await f.member("dave");
    await alice.add([(await gus.generateKeyPackage()).publicPackage]);
    await f.deliver(bob);
    await f.deliver(gus);
    await gus.selfRemove();
    await f.deliver(alice);
    await f.deliver(bob);
    await alice.add([(await dave.generateKeyPackage()).publicPackage]);
    expect(await f.deliver(gus)).toEqual([expect.objectContaining({ kind: "commit", removed: true })]);
    expect((await f.deliver(dave)).map((r) => r.kind)).toEqual(["joined"]);
    await f.deliver(bob);
    await expectInSync([alice, bob, dave]);
  });

  it("refuses commits that add members without their Welcome", async () => {
    const erin = await f.member("erin");
    const frank = await f.member("frank");
    // add_clients whose welcome_messages leave a joiner out.
    const p = await alice.prepareAdd([(await erin.generateKeyPackage()).publicPackage, (await frank.generateKeyPackage()).publicPackage]);
    const err = await f.hub.addClients({ groupUpdate: p.groupUpdate, welcomeMessages: [] }, { kind: "member", senderIndex: alice.leafIndex, signaturePrivateKey: alice.signatureKeyPair.signKey, signature: alice.cs.signature }).catch((e: unknown) => e);
    expect((err as DSRequestError).code).toBe(DSErrorCode.invalid_request);
    expect((err as DSRequestError).dsMessage).toMatch(/no Welcome/);
    // A hub Add committed by update_client (which carries no Welcome).
    await proposeAddition(f.ds.context, groupId, (await erin.generateKeyPackage()).publicPackage);
    await f.deliver(alice);
    const err2 = await alice.update().catch((e: unknown) => e);
    expect((err2 as DSRequestError).code).toBe(DSErrorCode.invalid_request);
    expect((err2 as DSRequestError).dsMessage).toMatch(/add_clients/);
    await alice.commitPending(); // as add_clients, with the Welcome
    expect((await f.deliver(erin)).map((r) => r.kind)).toEqual(["joined"]);
    await f.deliver(bob);
    await expectInSync([alice, bob, erin]);
  });

  it("closes a group after a ReInit commit", async () => {
    await alice.reinitialize(await f.hub.requestGroupId());
    await f.deliver(bob);
    await expectInSync([alice, bob]);
    // ts-mls refuses to commit in a suspended group; pretend it is active to reach the hub.
    bob.state = { ...bob.state!, groupActiveState: { kind: "active" } };
    const err = (await bob.update().catch((e: unknown) => e)) as DSRequestError;
    expect(err.code).toBe(DSErrorCode.invalid_message);
    expect(err.message).toMatch(/group_suspended/);
  });
});
