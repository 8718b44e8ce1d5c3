// SelfRemove (draft-ietf-mls-extensions, proposal type 0x000a), Update by
// reference, and new_member_proposal Adds. ts-mls cannot read SelfRemove
// (it decodes unknown proposals as opaque<V>), so its messages are built by
// hand here and checked against ts-mls's own tree math.
import { describe, it, expect } from "vitest";
import { createProposal, proposeAddExternal, defaultCapabilities, encodeMlsMessage, type CiphersuiteImpl, type MLSMessage } from "ts-mls";
import { signWithLabel } from "ts-mls/crypto/signature.js";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import { createUpdatePath } from "ts-mls/updatePath.js";
import { removeLeafNode, encodeRatchetTree } from "ts-mls/ratchetTree.js";
import { treeHashRoot } from "ts-mls/treeHash.js";
import { createContentCommitSignature } from "ts-mls/framedContent.js";
import { decodeGroupInfo } from "ts-mls/groupInfo.js";
import { leafNodeTBSEncoder } from "ts-mls/leafNode.js";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { Harness, mlsBytes } from "./harness.js";
import { tsMlsSuite, toHex } from "./helpers.js";
import { concat, u32, varLen } from "../../src/mls/codec.js";
import { merge, processMessage, type GroupState, type StagedCommit } from "../../src/mls/group.js";
import { groupInfoBytes, pendingProposals } from "../../src/mls/state.js";
import { EngineError } from "../../src/mls/errors.js";

async function suite(): Promise<CiphersuiteImpl> {
  const cs = await tsMlsSuite("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
  if (typeof cs === "string") throw new Error(cs);
  return cs;
}

const u64 = (n: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n);
  return b;
};

/** A SelfRemove PublicMessage from member `leaf` (membership_tag cannot be checked by the DS; any value). */
async function selfRemoveMessage(engine: GroupState, leaf: number, signKey: Uint8Array, cs: CiphersuiteImpl): Promise<Uint8Array> {
  const gc = engine.groupContext;
  const fc = concat(Uint8Array.of(0, 1, 0, 1), varLen(gc.groupId), u64(gc.epoch), Uint8Array.of(1), u32(leaf), varLen(new Uint8Array()), Uint8Array.of(2), Uint8Array.of(0, 0x0a));
  const sig = await signWithLabel(signKey, "FramedContentTBS", concat(fc, encodeGroupContext(gc)), cs.signature);
  return concat(fc, varLen(sig), varLen(new Uint8Array(32)));
}

describe("SelfRemove and other proposals by reference", () => {
  it("a SelfRemove committed by reference removes its sender; by value and duplicates are rejected", async () => {
    const cs = await suite();
    const caps = { ...defaultCapabilities(), proposals: [0x000a] };
    const h = new Harness(cs);
    await h.create("alice@a.example", [], caps);
    const bob = await h.identity("bob@b.example", { capabilities: caps });
    const carol = await h.identity("carol@c.example", { capabilities: caps });
    await h.commit("alice@a.example", [bob, carol].map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })), [bob, carol]);

    const msg = await selfRemoveMessage(h.engine, 1, bob.priv.signaturePrivateKey, cs);
    const staged = await processMessage(h.engine, msg);
    expect(staged.kind).toBe("proposal");
    const withProposal = await merge(h.engine, staged);
    expect(pendingProposals(withProposal)[0]!.proposal.proposalType).toBe(0x000a);
    // a second SelfRemove from bob in the same epoch is invalid
    await expect(processMessage(withProposal, await selfRemoveMessage(h.engine, 1, bob.priv.signaturePrivateKey, cs))).rejects.toMatchObject({ code: "invalid_proposal" });
    // only its sender can sign it
    await expect(processMessage(h.engine, await selfRemoveMessage(h.engine, 1, carol.priv.signaturePrivateKey, cs))).rejects.toMatchObject({ code: "invalid_signature" });

    // alice commits it by reference with a path computed by ts-mls on the tree without bob
    const alice = h.state("alice@a.example");
    const ref = pendingProposals(withProposal)[0]!.ref;
    const treeAfter = removeLeafNode(alice.ratchetTree, 1 as never);
    const [newTree, path] = await createUpdatePath(treeAfter, 0 as never, alice.groupContext, alice.signaturePrivateKey, cs);
    const build = async (proposals: unknown[], withPath: boolean) => {
      const { framedContent, signature } = await createContentCommitSignature(
        alice.groupContext,
        "mls_public_message",
        { proposals: proposals as never, path: withPath ? path : undefined },
        { senderType: "member", leafIndex: 0 },
        new Uint8Array(),
        alice.signaturePrivateKey,
        cs.signature,
      );
      const m: MLSMessage = {
        version: "mls10",
        wireformat: "mls_public_message",
        publicMessage: { content: framedContent, auth: { contentType: "commit", signature, confirmationTag: new Uint8Array(32) }, senderType: "member", membershipTag: new Uint8Array(32) },
      } as MLSMessage;
      return encodeMlsMessage(m);
    };
    const commit = await build([{ proposalOrRefType: "reference", reference: ref }], true);
    const sc = (await processMessage(withProposal, commit)) as StagedCommit;
    expect(sc.removed).toEqual([{ leafIndex: 1, clientId: "bob@b.example" }]);
    expect(toHex(sc.tree.rootHash)).toBe(toHex(await treeHashRoot(newTree, cs.hash)));
    expect(toHex(sc.tree.encode())).toBe(toHex(encodeRatchetTree(newTree)));
    // without a path: SelfRemove requires one
    await expect(processMessage(withProposal, await build([{ proposalOrRefType: "reference", reference: ref }], false))).rejects.toMatchObject({ code: "path_required" });
  });

  it("Update proposal by reference, committed by another member", async () => {
    const cs = await suite();
    const h = new Harness(cs);
    await h.create("alice@a.example");
    const ids = await Promise.all(["bob@b.example", "carol@c.example"].map((n) => h.identity(n)));
    await h.commit("alice@a.example", ids.map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })), ids);
    const carol = h.state("carol@c.example");
    const cur = carol.ratchetTree[4]!;
    if (cur.nodeType !== "leaf") throw new Error("leaf expected");
    const kp = await cs.hpke.generateKeyPair();
    // LeafNodeTBS for source=update: leaf fields + group_id + leaf_index
    const tbs = { ...cur.leaf, hpkePublicKey: await cs.hpke.exportPublicKey(kp.publicKey), leafNodeSource: "update" as const, groupId: carol.groupContext.groupId, leafIndex: 2 };
    const sig = await signWithLabel(carol.signaturePrivateKey, "LeafNodeTBS", encode(leafNodeTBSEncoder)(tbs as never), cs.signature);
    const leafNode = { ...cur.leaf, hpkePublicKey: tbs.hpkePublicKey, leafNodeSource: "update" as const, signature: sig } as never;
    await h.propose("carol@c.example", { proposalType: "update", update: { leafNode } });
    // carol's client cannot decrypt with a key it did not generate itself: follow the others
    h.members.delete("carol@c.example");
    const st = (await h.commit("bob@b.example")) as StagedCommit;
    expect(st.updated.map((u) => u.leafIndex)).toContain(2);
    expect(st.updated.find((u) => u.leafIndex === 2)).toEqual({ leafIndex: 2, previousClientId: "carol@c.example", clientId: "carol@c.example" });
    expect(toHex(h.engine.tree.leaf(2)!.leaf.hpkePublicKey)).toBe(toHex(tbs.hpkePublicKey));
  });

  it("new_member_proposal Add, committed by reference", async () => {
    const cs = await suite();
    const h = new Harness(cs);
    await h.create("alice@a.example");
    await h.commit("alice@a.example");
    const gi = decodeGroupInfo(groupInfoBytes(h.engine)!, 0)![0];
    const dave = await h.identity("dave@d.example");
    const msg = await proposeAddExternal(gi, dave.kp, dave.priv, cs);
    const staged = await processMessage(h.engine, mlsBytes(msg));
    expect(staged.kind === "proposal" && staged.pending.sender.senderType).toBe("new_member_proposal");
    h.engine = await merge(h.engine, staged);
    await h.deliver(msg, []);
    const st = (await h.commit("alice@a.example", [], [dave])) as StagedCommit;
    expect(st.added[0]!.clientId).toBe("dave@d.example");
    // a new_member_proposal carrying anything but an Add is refused
    await expect(processMessage(h.engine, mlsBytes(msg))).rejects.toBeInstanceOf(EngineError);
  });
});
