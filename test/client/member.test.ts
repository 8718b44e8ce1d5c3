// MimiMember flows that need no DS: real ts-mls clients, RFC 9420
// external_senders in the GroupContext, messages round-tripped through the
// wire codecs as the DS would carry them.
import { describe, expect, it } from "vitest";
import {
  acceptAll,
  createGroup,
  emptyPskIndex,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  processMessage,
  type MLSMessage,
} from "ts-mls";
import { verifyGroupInfoSignature } from "ts-mls/groupInfo.js";
import { protectExternalProposalPublic } from "ts-mls/messageProtectionPublic.js";
import { decodeMLSMessage, encodeMLSMessage, readDSProtocolVersion, readExternalSenders } from "../../src/wire/index.js";
import { MimiMember, welcomeMessage } from "../../src/client/index.js";

const wire = (m: MLSMessage): Uint8Array => encodeMLSMessage(m);

async function hubIdentity() {
  const hub = await MimiMember.create({ clientId: "mimi://hub.example" });
  return { hub, sender: hub.asExternalSender };
}

describe("MimiMember without a DS", () => {
  it("creates a group with RFC external_senders and ds_protocol_version, adds, messages, updates, removes", async () => {
    const { sender } = await hubIdentity();
    const alice = await MimiMember.create({ clientId: "mimi://a.example/u/alice/d/1" });
    const bob = await MimiMember.create({ clientId: "bob:1@b.example" });
    await alice.createLocalGroup(Uint8Array.of(1, 2, 3, 4), sender);
    const exts = alice.state!.groupContext.extensions;
    expect(readExternalSenders(exts)).toEqual([sender]);
    expect(readDSProtocolVersion(exts)).toBe(1);
    expect(alice.epoch).toBe(0n);

    const bobKp = await bob.generateKeyPackage();
    const add = await alice.prepareAdd([bobKp.publicPackage]);
    // The commit is a PublicMessage, and the PartialGroupInfo signs the new epoch's GroupInfo (with external_pub).
    expect(decodeMLSMessage(wire(add.groupUpdate.commit)).wireformat).toBe("mls_public_message");
    const pgi = add.groupUpdate.partialGroupInfo;
    expect(pgi.groupInfoExtensions.map((e) => e.extensionType)).toEqual(["external_pub"]);
    const gi = {
      groupContext: add.newState.groupContext,
      extensions: [...pgi.groupInfoExtensions],
      confirmationTag: add.newState.confirmationTag,
      signer: add.newState.privatePath.leafIndex,
      signature: pgi.signature,
    };
    expect(await verifyGroupInfoSignature(gi, alice.signatureKeyPair.publicKey, alice.cs.signature)).toBe(true);
    alice.state = add.newState;

    // Bob joins with the Welcome (as carried on the wire) and the tree the hub would return.
    const welcome = decodeMLSMessage(wire(welcomeMessage(add.welcome)));
    if (welcome.wireformat !== "mls_welcome") throw new Error("not a welcome");
    const peek = await bob.inspectWelcome(welcome.welcome);
    expect(peek.groupInfo.groupContext.groupId).toEqual(Uint8Array.of(1, 2, 3, 4));
    expect(peek.groupInfo.groupContext.epoch).toBe(1n);
    await bob.joinWithTree(welcome.welcome, alice.ratchetTree);
    expect(bob.epoch).toBe(1n);
    expect(bob.treeHash).toEqual(alice.treeHash);
    expect(await bob.computeTreeHash()).toEqual(alice.treeHash);
    expect(readExternalSenders(bob.state!.groupContext.extensions)).toEqual([sender]);
    expect(bob.members().map((m) => m.clientId)).toEqual(["mimi://a.example/u/alice/d/1", "bob:1@b.example"]);

    // Application message.
    const msg = await alice.prepareSend("hello bob");
    alice.state = msg.newState;
    expect(await bob.processIncoming(wire(msg.message))).toMatchObject({ kind: "application", text: "hello bob" });

    // Bob's update commit; Alice processes it; her own echo would be stale for Bob.
    const upd = await bob.prepareRemove([]); // empty commit: a path update
    bob.state = upd.newState;
    expect(await alice.processIncoming(wire(upd.groupUpdate.commit))).toEqual({ kind: "commit", epoch: 2n, removed: false });
    expect(await bob.processIncoming(wire(upd.groupUpdate.commit))).toEqual({ kind: "stale", epoch: 1n });
    expect(alice.treeHash).toEqual(bob.treeHash);

    // Bob proposes to remove himself (Remove of his own leaf); Alice commits the pending proposal.
    const self = await bob.prepareSelfRemove();
    bob.state = self.newState;
    expect(await alice.processIncoming(wire(self.message))).toEqual({ kind: "proposal" });
    expect(Object.keys(alice.state!.unappliedProposals)).toHaveLength(1);
    const rm = await alice.prepareRemove([]);
    alice.state = rm.newState;
    expect(alice.members().map((m) => m.clientId)).toEqual(["mimi://a.example/u/alice/d/1"]);
    expect(await bob.processIncoming(wire(rm.groupUpdate.commit))).toEqual({ kind: "commit", epoch: 3n, removed: true });
  });

  it("removes by client id", async () => {
    const { sender } = await hubIdentity();
    const alice = await MimiMember.create({ clientId: "alice:1@a.example" });
    const bob = await MimiMember.create({ clientId: "bob:1@a.example" });
    const carol = await MimiMember.create({ clientId: "carol:1@a.example" });
    await alice.createLocalGroup(Uint8Array.of(9), sender);
    const add = await alice.prepareAdd([(await bob.generateKeyPackage()).publicPackage, (await carol.generateKeyPackage()).publicPackage]);
    alice.state = add.newState;
    await carol.joinWithTree(add.welcome, alice.ratchetTree);
    expect(alice.resolveLeaves(["bob:1@a.example", 2])).toEqual([1, 2]);
    const rm = await alice.prepareRemove(["bob:1@a.example"]);
    alice.state = rm.newState;
    expect(await carol.processIncoming(wire(rm.groupUpdate.commit))).toMatchObject({ kind: "commit", epoch: 2n });
    expect(carol.members().map((m) => m.clientId)).toEqual(["alice:1@a.example", "carol:1@a.example"]);
    expect(() => alice.resolveLeaves(["nobody@a.example"])).toThrow(/not a member/);
  });

  it("KeyPackages carry fanout_auth (and last_resort) and advertise the MIMI extensions", async () => {
    const m = await MimiMember.create({ clientId: "dave:1@a.example" });
    m.token = { token: Uint8Array.of(7, 7, 7) };
    const kp = await m.generateKeyPackage({ lastResort: true });
    const types = kp.publicPackage.extensions.map((e) => e.extensionType);
    expect(types).toEqual([0xf0a1, 0xf0a4]);
    expect(kp.publicPackage.leafNode.capabilities.extensions).toEqual(expect.arrayContaining([0xf0a1, 0xf0a2, 0xf0a3, 0xf0a4]));
    expect(kp.publicPackage.leafNode.extensions.map((e) => e.extensionType)).toEqual([0xf0a3]);
  });
});

// Test clients need a ts-mls that reads the RFC 9420 external_senders form
// (DESIGN.md section 9): plain 1.6.4 fails with "Could not decode
// external_senders"; patches/ts-mls+1.6.4.patch carries upstream PR 476.
describe("ts-mls (patched) and RFC 9420 external_senders", async () => {
  const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
  const { hub, sender } = await hubIdentity();

  it("creates a group whose external_senders is in the RFC form", async () => {
    const probe = await MimiMember.create({ clientId: "probe:1@a.example" });
    const kp = await probe.generateKeyPackage();
    const state = await createGroup(Uint8Array.of(1), kp.publicPackage, kp.privatePackage, MimiMember.groupExtensions(sender), cs);
    expect(state.groupContext.epoch).toBe(0n);
  });

  it("members process an external (hub) Remove proposal", async () => {
    const alice = await MimiMember.create({ clientId: "alice:1@a.example" });
    const bob = await MimiMember.create({ clientId: "bob:1@a.example" });
    await alice.createLocalGroup(Uint8Array.of(5), sender);
    const add = await alice.prepareAdd([(await bob.generateKeyPackage()).publicPackage]);
    alice.state = add.newState;
    const { publicMessage } = await protectExternalProposalPublic(
      hub.signatureKeyPair.signKey,
      alice.state.groupContext,
      new Uint8Array(),
      { proposalType: "remove", remove: { removed: 1 } },
      { senderType: "external", senderIndex: 0 },
      cs,
    );
    const message: MLSMessage = { version: "mls10", wireformat: "mls_public_message", publicMessage };
    const outcome = processMessage(
      message as Parameters<typeof processMessage>[0],
      alice.state,
      emptyPskIndex,
      acceptAll,
      cs,
    );
    await expect(outcome).resolves.toMatchObject({ kind: "newState" });
  });
});
