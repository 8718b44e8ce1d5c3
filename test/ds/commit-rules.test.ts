// Commit rules of the hub beyond RFC 9420 (draft Sections 8 and 9): stored
// proposals must be referenced, stale commits learn the current epoch, and a
// reinitialized group takes no more commits. (The whole flow of operations
// runs against a real process in test/e2e/hub.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DSRequestError, MimiMember } from "../../src/client/index.js";
import { epochOf, treeHash } from "../../src/mls/index.js";
import { DSErrorCode } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let carol: MimiMember;
let groupId: Uint8Array;

beforeAll(async () => {
  f = await startHub();
  alice = await f.member("alice");
  bob = await f.member("bob");
  carol = await f.member("carol");
  groupId = await alice.createGroup(await f.hubSender());
  await alice.add([(await bob.generateKeyPackage()).publicPackage, (await carol.generateKeyPackage()).publicPackage]);
  await f.deliver(bob);
  await f.deliver(carol);
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
