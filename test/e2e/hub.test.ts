// One hub as a real `serve` process over TLS, clients using its ClientService
// (registration, KeyPackages, their queue stream) and HubService: every
// operation of the draft in sequence; after each step every member's epoch
// and tree hash equal the hub's.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { createDSTransport, DSRequestError, MimiMember } from "../../src/client/index.js";
import { DSErrorCode, makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { Federation, type E2EClient } from "./harness.js";

const HUB = "hub.example";
let fed: Federation;
beforeAll(async () => {
  fed = await Federation.start([HUB]);
});
afterAll(() => fed?.close());

async function expectInSync(groupId: Uint8Array, clients: E2EClient[]) {
  const hub = await fed.hubView(HUB, groupId);
  for (const c of clients) {
    expect(c.member.epoch, c.id).toBe(hub.epoch);
    expect(Buffer.from(c.member.treeHash).toString("hex"), c.id).toBe(hub.treeHash);
  }
}
const kinds = (rs: { kind: string }[]) => rs.map((r) => r.kind);

describe("every operation against a real hub process", () => {
  it("create, add, join, message, update, remove, self-remove, external join, resync, DS removal, reinit, delete", async () => {
    const alice = await fed.client("alice", HUB);
    const bob = await fed.client("bob", HUB);
    const carol = await fed.client("carol", HUB);

    // alice creates; bob's and carol's KeyPackages come from the DS; they join from their Welcomes.
    // The group opts into open external joins (dave joins that way below; docs/security.md).
    const groupId = await alice.member.createGroup(await fed.hubSender(HUB), [makeExternalJoinPolicyExtension("open")]);
    await alice.member.addClients([bob.id, carol.id]);
    expect(kinds(await bob.process(1))).toEqual(["joined"]);
    expect(kinds(await carol.process(1))).toEqual(["joined"]);
    await expectInSync(groupId, [alice, bob, carol]);

    // Everyone sends and receives.
    for (const [sender, others] of [[alice, [bob, carol]], [bob, [alice, carol]], [carol, [alice, bob]]] as const) {
      await sender.member.send(`from ${sender.id}`);
      for (const o of others) expect((await o.process(1))[0]).toMatchObject({ kind: "application", text: `from ${sender.id}` });
    }

    await bob.member.update();
    for (const c of [alice, carol]) expect(kinds(await c.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob, carol]);

    // Self-remove by carol, committed by bob by reference.
    await carol.member.selfRemove();
    for (const c of [alice, bob]) expect(kinds(await c.process(1))).toEqual(["proposal"]);
    await bob.member.commitPending();
    expect(await carol.process(1)).toEqual([expect.objectContaining({ kind: "commit", removed: true })]);
    expect(kinds(await alice.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob]);

    // External join by dave, then removal by value.
    const dave = await fed.client("dave", HUB, 0);
    await dave.member.externalJoin(groupId);
    for (const c of [alice, bob]) expect(kinds(await c.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob, dave]);
    await alice.member.remove([dave.id]);
    expect(await dave.process(1)).toEqual([expect.objectContaining({ removed: true })]);
    expect(kinds(await bob.process(1))).toEqual(["commit"]);

    // Resync: bob loses his state and comes back by an external commit replacing his leaf.
    const bob2 = await MimiMember.create({ clientId: bob.id, hub: bob.member.hub!, signatureKeyPair: bob.member.signatureKeyPair });
    bob2.token = bob.member.token;
    await bob2.externalJoin(groupId, true);
    expect(kinds(await alice.process(1))).toEqual(["commit"]);
    // The old leaf was a member of the old epoch, so the commit reaches bob's queue too: stale for him now.
    bob.member.state = bob2.state;
    expect(kinds(await bob.process(1))).toEqual(["stale"]);
    await expectInSync(groupId, [alice, bob]);

    // DS-initiated removal of erin through the operator's AdminService.
    const erin = await fed.client("erin", HUB);
    await alice.member.addClients([erin.id]);
    expect(kinds(await erin.process(1))).toEqual(["joined"]);
    expect(kinds(await bob.process(1))).toEqual(["commit"]);
    const op = fed.ca.domain(HUB);
    const adminT = createDSTransport({ baseUrl: fed.url(HUB), ca: fed.ca.ca, cert: op.cert, key: op.key });
    try {
      await createClient(AdminService, adminT).proposeRemoval({ groupId, clientId: erin.id });
    } finally {
      adminT.close();
    }
    for (const c of [alice, bob, erin]) expect(kinds(await c.process(1))).toEqual(["proposal"]);
    await alice.member.commitPending();
    expect(await erin.process(1)).toEqual([expect.objectContaining({ removed: true })]);
    expect(kinds(await bob.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob]);

    // Reinit: the group closes.
    const successor = await alice.member.hub!.requestGroupId();
    await alice.member.reinitialize(successor);
    expect(kinds(await bob.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob]);

    // Delete a second group.
    const gina = await fed.client("gina", HUB);
    const hank = await fed.client("hank", HUB);
    const g2 = await gina.member.createGroup(await fed.hubSender(HUB));
    await gina.member.addClients([hank.id]);
    expect(kinds(await hank.process(1))).toEqual(["joined"]);
    await gina.member.deleteGroup();
    expect(await hank.process(1)).toEqual([expect.objectContaining({ removed: true })]);
    const gone = await gina.member.hub!.externalCommitInfo(g2).catch((e: unknown) => e);
    expect((gone as DSRequestError).code).toBe(DSErrorCode.unknown_group);
  });
});
