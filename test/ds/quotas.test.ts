// Issue 13 item 11 (groups per caller): one client creating group after
// group is stopped at policy.maxGroupsPerCreator with quota_exceeded, also
// when the creates race; deleting a group frees its place; other creators are
// not affected.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DSRequestError, MimiMember } from "../../src/client/index.js";
import { DSErrorCode } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

const MAX = 3;
let f: HubFixture;
beforeAll(async () => {
  f = await startHub("hub.example", { policy: { maxGroupsPerCreator: MAX } });
});
afterAll(() => f?.close());

/** A fresh MimiMember per group: one member object holds one group's state. */
async function creatorTwin(of: MimiMember): Promise<MimiMember> {
  const m = await MimiMember.create({ clientId: of.clientId, hub: f.hub, signatureKeyPair: of.signatureKeyPair });
  m.token = of.token;
  return m;
}

describe("groups per creator", () => {
  it("refuses the group beyond the quota (quota_exceeded, nothing stored), also for concurrent creates", async () => {
    const mallory = await f.member("mallory");
    const twins = await Promise.all(Array.from({ length: MAX + 3 }, () => creatorTwin(mallory)));
    const sender = await f.hubSender();
    const results = await Promise.allSettled(twins.map((t) => t.createGroup(sender)));
    const created = results.filter((r) => r.status === "fulfilled");
    expect(created).toHaveLength(MAX);
    for (const r of results)
      if (r.status === "rejected") {
        expect(r.reason).toBeInstanceOf(DSRequestError);
        expect((r.reason as DSRequestError).code).toBe(DSErrorCode.quota_exceeded);
      }
    expect((await f.store.listGroups()).length).toBe(MAX);

    // Another creator is not affected.
    const other = await f.member("other");
    await other.createGroup(sender);

    // Deleting one of mallory's groups frees its place.
    const owner = twins[results.findIndex((r) => r.status === "fulfilled")]!;
    await owner.deleteGroup();
    const again = await creatorTwin(mallory);
    await again.createGroup(sender);
    const one = await creatorTwin(mallory);
    expect(((await one.createGroup(sender).catch((e: unknown) => e)) as DSRequestError).code).toBe(DSErrorCode.quota_exceeded);
  });
});
