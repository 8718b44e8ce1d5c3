// Scenarios with real ts-mls clients: after every commit the engine's
// GroupContext (hence tree hash and transcript hashes) equals every member's.
import { describe, it, expect } from "vitest";
import { createProposal, type CiphersuiteImpl, type CiphersuiteName } from "ts-mls";
import { proposeExternal } from "ts-mls";
import { createCommit } from "ts-mls";
import { decodeGroupInfo } from "ts-mls/groupInfo.js";
import { encodeRequiredCapabilities } from "ts-mls";
import { Harness, externalSendersExtension, mlsBytes } from "./harness.js";
import { tsMlsSuite, toHex } from "./helpers.js";
import { merge, processMessage, type StagedCommit } from "../../src/mls/group.js";
import { groupInfoBytes, memberByClientId, members, ratchetTreeBytes, encodeGroupState, decodeGroupState, replay, unreferencedProposals } from "../../src/mls/state.js";
import { EngineError } from "../../src/mls/errors.js";
import { keyOf } from "../../src/mls/codec.js";
import { engineCrypto } from "../../src/mls/crypto.js";
import { keyPackageRef } from "../../src/mls/group.js";

const SUITE: CiphersuiteName = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

async function suite(name: CiphersuiteName = SUITE): Promise<CiphersuiteImpl> {
  const cs = await tsMlsSuite(name);
  if (typeof cs === "string") throw new Error(cs);
  return cs;
}

describe("scenarios with ts-mls clients", () => {
  it("create, add many in one commit, update, remove by value and by reference", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    const joiners = await Promise.all(["bob:phone@b.example", "carol@c.example", "dave@a.example", "erin@b.example", "frank@c.example"].map((n) => h.identity(n)));
    const staged = (await h.commit("alice@a.example", joiners.map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })), joiners)) as StagedCommit;
    expect(staged.added.map((a) => a.leafIndex)).toEqual([1, 2, 3, 4, 5]);
    const c = await engineCrypto(SUITE);
    expect(toHex(staged.added[0]!.keyPackageRef)).toBe(toHex(keyPackageRef(c, joiners[0]!.kp)));
    expect(h.members.size).toBe(6);
    // an empty commit (path update) by bob
    await h.commit("bob:phone@b.example");
    // Update proposal by carol, committed by dave
    const carol = h.ids.get("carol@c.example")!;
    const upd = await h.identity("carol@c.example", { sig: carol.sig });
    void upd;
    // ts-mls has no Update-proposal helper; an empty commit from carol refreshes her leaf instead
    await h.commit("carol@c.example");
    // remove by value
    const st = (await h.commit("alice@a.example", [{ proposalType: "remove", remove: { removed: h.leafOf("frank@c.example") } }])) as StagedCommit;
    expect(st.removed.map((r) => r.clientId)).toEqual(["frank@c.example"]);
    // remove by reference: dave proposes, alice commits
    await h.propose("dave@a.example", { proposalType: "remove", remove: { removed: h.leafOf("erin@b.example") } });
    expect(h.engine.proposals.size).toBe(1);
    const st2 = (await h.commit("alice@a.example")) as StagedCommit;
    expect(unreferencedProposals(st2)).toEqual([]);
    expect(st2.removed.map((r) => r.clientId)).toEqual(["erin@b.example"]);
    expect(st2.proposals[0]!.ref).toBeDefined();
    expect(h.engine.proposals.size).toBe(0);
    // membership
    expect([...members(h.engine)].map((m) => m.clientId).sort()).toEqual(["alice@a.example", "bob:phone@b.example", "carol@c.example", "dave@a.example"]);
    expect(memberByClientId(h.engine, "bob:phone@b.example")?.domain).toBe("b.example");
  });

  it("adds without a path leave unmerged leaves; the served GroupInfo and tree re-seed an engine", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    const first = await Promise.all(Array.from({ length: 7 }, (_, i) => h.identity(`m${i}@x.example`)));
    await h.commit("alice@a.example", first.map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })), first);
    await h.commit("m0@x.example"); // fills m0's direct path
    await h.commit("alice@a.example", [2, 3].map((l) => ({ proposalType: "remove" as const, remove: { removed: l } })));
    const more = await Promise.all(["n0@y.example", "n1@y.example"].map((n) => h.identity(n)));
    const st = (await h.commit("m4@x.example", more.map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })), more)) as StagedCommit;
    expect(st.hasPath).toBe(false);
    expect(st.added.map((a) => a.leafIndex)).toEqual([2, 3]);
    const unmerged = h.engine.tree.nodes.toArray().reduce((n, x) => n + (x?.t === 2 ? x.parent.unmergedLeaves.length : 0), 0);
    expect(unmerged).toBeGreaterThan(0);
    await h.commit("m5@x.example"); // a path next to nodes with unmerged leaves
    await h.commit("n0@y.example"); // a path through them
    // the resolution sizes cached through all these edits are still right
    const ed = h.engine.tree.edit();
    for (let x = 0; x < h.engine.tree.nodes.length; x++) expect(ed.resolutionSize(x), `node ${x}`).toBe(ed.resolution(x).length);
  });

  it("self-remove (a member's Remove proposal for its own leaf) committed by another member", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    const bob = await h.identity("bob@b.example");
    await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: bob.kp } }], [bob]);
    await h.propose("bob@b.example", { proposalType: "remove", remove: { removed: h.leafOf("bob@b.example") } });
    const st = (await h.commit("alice@a.example")) as StagedCommit;
    expect(st.removed[0]!.clientId).toBe("bob@b.example");
    expect(h.engine.tree.memberCount).toBe(1);
  });

  it("external join and resync from the GroupInfo and tree the engine serves", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    await h.commit("alice@a.example"); // gives the engine a GroupInfo with external_pub
    expect(groupInfoBytes(h.engine)).toBeDefined();
    const gi = decodeGroupInfo(groupInfoBytes(h.engine)!, 0)![0];
    expect(gi.groupContext.epoch).toBe(h.engine.groupContext.epoch);
    const bob = await h.identity("bob@b.example");
    const st = (await h.externalJoin(bob)) as StagedCommit;
    expect(st.external).toBe(true);
    expect(st.committer).toBe(1);
    expect(st.externalJoiner).toEqual({ leafIndex: 1, clientId: "bob@b.example" });
    await h.commit("alice@a.example");
    // resync: bob lost state and rejoins, removing his old leaf (same signature key)
    const bob2 = await h.identity("bob@b.example", { sig: bob.sig });
    const st2 = (await h.externalJoin(bob2, true)) as StagedCommit;
    expect(st2.removed.map((r) => r.leafIndex)).toEqual([1]);
    expect(h.engine.tree.memberCount).toBe(2);
    await h.commit("bob@b.example");
  });

  it("group context extensions (with a path) and required capabilities", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    const bob = await h.identity("bob@b.example");
    await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: bob.kp } }], [bob]);
    const rc = { extensionType: "required_capabilities" as const, extensionData: encodeRequiredCapabilities({ extensionTypes: [], proposalTypes: [], credentialTypes: ["basic"] }) };
    // ts-mls omits the path for a GCE-only commit (RFC 9420 requires one), and its
    // members cannot decrypt a path sent with new extensions; so alice commits
    // GCE + Remove(bob) and the engine is compared with the committer's state.
    h.members.delete("bob@b.example");
    await h.commit("alice@a.example", [
      { proposalType: "group_context_extensions", groupContextExtensions: { extensions: [rc] } },
      { proposalType: "remove", remove: { removed: 1 } },
    ]);
    expect(h.engine.requiredCapabilities?.credentialTypes).toEqual(["basic"]);
    expect(h.engine.groupContext.extensions.length).toBe(1);
    const carol = await h.identity("carol@c.example");
    await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: carol.kp } }], [carol]);
    await h.commit("carol@c.example");
  });

  it("external sender (the hub) proposes a Remove; external_senders in RFC vector form", async () => {
    const cs = await suite();
    const hub = await cs.signature.keygen();
    const other = await cs.signature.keygen();
    const h = new Harness(cs);
    await h.create("alice@a.example", [
      externalSendersExtension([
        { signaturePublicKey: other.publicKey, identity: "other-ds.example" },
        { signaturePublicKey: hub.publicKey, identity: "ds.a.example" },
      ]),
    ]);
    expect(h.engine.externalSenders.length).toBe(2);
    const bob = await h.identity("bob@b.example");
    await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: bob.kp } }], [bob]);
    const gi = decodeGroupInfo(groupInfoBytes(h.engine)!, 0)![0];
    const msg = await proposeExternal(gi, { proposalType: "remove", remove: { removed: 1 } }, hub.publicKey, hub.signKey, cs);
    const bytes = mlsBytes(msg);
    // sender_index 1: the hub's position in the vector, found by its signature key
    expect(bytes.length).toBeGreaterThan(0);
    const staged = await processMessage(h.engine, bytes);
    expect(staged.kind === "proposal" && staged.pending.sender).toEqual({ senderType: "external", senderIndex: 1 });
    h.engine = await merge(h.engine, staged);
    await h.deliver(msg, []);
    const st = (await h.commit("alice@a.example")) as StagedCommit;
    expect(st.removed[0]!.clientId).toBe("bob@b.example");
  });

  it("reinit closes the group", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    const bob = await h.identity("bob@b.example");
    await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: bob.kp } }], [bob]);
    // reinitGroup sends a PrivateMessage; the same ReInit committed as a PublicMessage:
    const reinit = { groupId: new TextEncoder().encode("new-group"), version: "mls10" as const, cipherSuite: SUITE, extensions: [] };
    const r = await createCommit({ state: h.state("alice@a.example"), cipherSuite: h.cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "reinit", reinit }] });
    const staged = (await processMessage(h.engine, mlsBytes(r.commit))) as StagedCommit;
    expect(staged.reinit).toBeDefined();
    expect(staged.hasPath).toBe(false);
    h.engine = await merge(h.engine, staged);
    await h.deliver(r.commit, ["alice@a.example"]);
    h.members.set("alice@a.example", r.newState);
    h.assertSynced();
    // the suspension survives a snapshot
    const restored = await decodeGroupState(encodeGroupState(h.engine));
    expect(restored.reinit?.groupId).toEqual(reinit.groupId);
    // a later commit for the suspended group is refused
    const again = { ...h.engine.groupContext };
    void again;
    await expect(processMessage(h.engine, mlsBytes(r.commit))).rejects.toMatchObject({ code: "group_suspended" });
  });

  it("snapshot round trip and replay of stored commits", async () => {
    const h = new Harness(await suite());
    await h.create("alice@a.example");
    const snap = encodeGroupState(h.engine);
    const stored: { message: Uint8Array; partialGroupInfo?: Uint8Array }[] = [];
    const { partialGroupInfoOf } = await import("./harness.js");
    const bob = await h.identity("bob@b.example");
    const r = await createCommit({ state: h.state("alice@a.example"), cipherSuite: h.cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: bob.kp } }] });
    stored.push({ message: mlsBytes(r.commit), partialGroupInfo: await partialGroupInfoOf(r.newState, h.cs) });
    const live = await merge(h.engine, await processMessage(h.engine, stored[0]!.message), stored[0]!.partialGroupInfo);
    const restored = await replay(await decodeGroupState(snap), stored);
    expect(toHex(restored.groupContextBytes)).toBe(toHex(live.groupContextBytes));
    expect(toHex(ratchetTreeBytes(restored))).toBe(toHex(ratchetTreeBytes(live)));
    expect(toHex(groupInfoBytes(restored)!)).toBe(toHex(groupInfoBytes(live)!));
    const again = await decodeGroupState(encodeGroupState(live), { verify: "full" });
    expect(toHex(again.groupContextBytes)).toBe(toHex(live.groupContextBytes));
    expect(again.tree.findClient("bob@b.example")).toBe(1);
    expect(keyOf(again.interimTranscriptHash)).toBe(keyOf(live.interimTranscriptHash));
  });

  for (const name of ["MLS_128_DHKEMP256_AES128GCM_SHA256_P256", "MLS_256_DHKEMP384_AES256GCM_SHA384_P384", "MLS_256_DHKEMP521_AES256GCM_SHA512_P521"] as CiphersuiteName[]) {
    it(`add, update and remove under ${name}`, async () => {
      const h = new Harness(await suite(name));
      await h.create("alice@a.example");
      const bob = await h.identity("bob@b.example");
      const carol = await h.identity("carol@c.example");
      await h.commit("alice@a.example", [bob, carol].map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })), [bob, carol]);
      await h.commit("bob@b.example");
      await h.commit("carol@c.example", [{ proposalType: "remove", remove: { removed: 0 } }]);
      expect(h.engine.tree.memberCount).toBe(2);
    });
  }
});
