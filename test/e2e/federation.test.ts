// Three DS processes (a, b, c) on loopback, TLS and mutual TLS from one
// development CA, clients of all three domains in one group hosted on a:
// KeyPackages fetched through the clients' own DSs, every request of b's and
// c's clients proxied by their DS to the hub, fanout streamed to b and c.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { Federation, type E2EClient } from "./harness.js";

const A = "a.example";
const B = "b.example";
const C = "c.example";
let fed: Federation;

beforeAll(async () => {
  fed = await Federation.start([A, B, C]);
});
afterAll(() => fed?.close());

async function expectInSync(groupId: Uint8Array, clients: E2EClient[]) {
  const hub = await fed.hubView(A, groupId);
  for (const c of clients) {
    expect(c.member.epoch, c.id).toBe(hub.epoch);
    expect(Buffer.from(c.member.treeHash).toString("hex"), c.id).toBe(hub.treeHash);
  }
}

const kinds = (rs: { kind: string }[]) => rs.map((r) => r.kind);

describe("three domains, one group", () => {
  it("creates, adds across domains, messages both ways, updates, removes, self-removes and joins externally", async () => {
    const alice = await fed.client("alice", A);
    const bob = await fed.client("bob", B);
    const carol = await fed.client("carol", C);

    // The group opts into open external joins (dave joins that way below; docs/security.md).
    const groupId = await alice.member.createGroup(await fed.hubSender(A), [makeExternalJoinPolicyExtension("open")]);
    // KeyPackages of b's and c's clients come through a (which asks b and c).
    await alice.member.addClients([bob.id, carol.id]);
    expect(kinds(await bob.process(1))).toEqual(["joined"]);
    expect(kinds(await carol.process(1))).toEqual(["joined"]);
    await expectInSync(groupId, [alice, bob, carol]);

    // Application messages both ways; bob's request goes b -> a, the fanout a -> c and a -> a.
    await bob.member.send("hi from b");
    expect(await alice.process(1)).toEqual([expect.objectContaining({ kind: "application", text: "hi from b" })]);
    expect(await carol.process(1)).toEqual([expect.objectContaining({ kind: "application", text: "hi from b" })]);
    await alice.member.send("hi from a");
    expect((await bob.process(1))[0]).toMatchObject({ text: "hi from a" });
    expect((await carol.process(1))[0]).toMatchObject({ text: "hi from a" });

    // Update by a guest-domain member.
    await carol.member.update();
    expect(kinds(await alice.process(1))).toEqual(["commit"]);
    expect(kinds(await bob.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob, carol]);

    // External join by a client of a guest domain (via its own DS c).
    const dave = await fed.client("dave", C, 0);
    await dave.member.externalJoin(groupId);
    for (const c of [alice, bob, carol]) expect(kinds(await c.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob, carol, dave]);

    // Self-remove by bob, committed by dave (another domain) by reference.
    await bob.member.selfRemove();
    for (const c of [alice, carol, dave]) expect(kinds(await c.process(1))).toEqual(["proposal"]);
    await dave.member.commitPending();
    expect((await bob.process(1))[0]).toMatchObject({ kind: "commit", removed: true });
    for (const c of [alice, carol]) expect(kinds(await c.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, carol, dave]);

    // Removal of a guest-domain client by the hub-domain client.
    await alice.member.remove([carol.id]);
    expect((await carol.process(1))[0]).toMatchObject({ kind: "commit", removed: true });
    expect(kinds(await dave.process(1))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, dave]);

    await dave.member.send("still here");
    expect((await alice.process(1))[0]).toMatchObject({ text: "still here" });
    await bob.expectQuiet();
    await carol.expectQuiet();
  });

  it("a guest DS stopped during traffic receives everything it missed, in order, once", async () => {
    const erin = await fed.client("erin", A);
    const fay = await fed.client("fay", B);
    const groupId = await erin.member.createGroup(await fed.hubSender(A));
    await erin.member.addClients([fay.id]);
    expect(kinds(await fay.process(1))).toEqual(["joined"]);

    await fed.stopDomain(B);
    for (let i = 0; i < 10; i++) await erin.member.send(`while b is down ${i}`);
    await fed.startDomain(B);
    const got = await fay.process(10, 30_000);
    expect(got.map((r) => (r as { text: string }).text)).toEqual(Array.from({ length: 10 }, (_, i) => `while b is down ${i}`));
    await fay.expectQuiet(500);
    await expectInSync(groupId, [erin, fay]);
  });
});
