// Negative cases: each fails with a specific typed EngineError and leaves the state as it was.
import { describe, it, expect, beforeEach } from "vitest";
import {
  createCommit,
  createProposal,
  decodeMlsMessage,
  joinGroupExternal,
  type CiphersuiteImpl,
  type FramedContent,
  type GroupContext,
  type MLSMessage,
  type MlsPublicMessage,
} from "ts-mls";
import { signFramedContentTBS } from "ts-mls/framedContent.js";
import { signLeafNodeCommit } from "ts-mls/leafNode.js";
import { encodeMlsMessage } from "ts-mls";
import { decodeGroupInfo } from "ts-mls/groupInfo.js";
import { decodeRatchetTree } from "ts-mls/ratchetTree.js";
import { Harness, mlsBytes } from "./harness.js";
import { tsMlsSuite, toHex } from "./helpers.js";
import { EngineError, WrongEpochError } from "../../src/mls/errors.js";
import { merge, processMessage, seedFromGroupContext, type GroupState } from "../../src/mls/group.js";
import { PublicTree } from "../../src/mls/tree.js";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import { encodeGroupState, groupInfoBytes, ratchetTreeBytes } from "../../src/mls/state.js";
import { decodePublicMessage, varLenHeader } from "../../src/mls/codec.js";

let cs: CiphersuiteImpl;
let h: Harness;

beforeEach(async () => {
  const s = await tsMlsSuite("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
  if (typeof s === "string") throw new Error(s);
  cs = s;
  h = new Harness(cs);
  await h.create("alice@a.example");
  const bob = await h.identity("bob@b.example");
  await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: bob.kp } }], [bob]);
});

/** Process `bytes`, expect an EngineError with `code`, and check the state is untouched. */
async function expectRejected(s: GroupState, bytes: Uint8Array, code: string): Promise<EngineError> {
  const before = encodeGroupState(s);
  let err: unknown;
  try {
    await processMessage(s, bytes);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(EngineError);
  expect((err as EngineError).code).toBe(code);
  expect(toHex(encodeGroupState(s))).toBe(toHex(before));
  return err as EngineError;
}

const clone = <T>(x: T): T => structuredClone(x);

/** Re-sign a PublicMessage after mutating its content (and, for commits with a path, its leaf). */
async function resign(
  msg: MLSMessage,
  signKey: Uint8Array,
  ctx: GroupContext,
  mutate: (c: FramedContent) => void,
  leaf?: { leafIndex: number },
): Promise<Uint8Array> {
  const pm = (msg as MlsPublicMessage).publicMessage;
  const content = clone(pm.content);
  mutate(content);
  if (leaf !== undefined && content.contentType === "commit" && content.commit.path !== undefined) {
    const l = content.commit.path.leafNode;
    const signed = await signLeafNodeCommit({ ...l, groupId: ctx.groupId, leafIndex: leaf.leafIndex }, signKey, cs.signature);
    content.commit.path.leafNode = { ...l, signature: signed.signature };
  }
  const tbs = { protocolVersion: "mls10" as const, wireformat: "mls_public_message" as const, content, senderType: content.sender.senderType, context: ctx } as never;
  const signature = await signFramedContentTBS(signKey, tbs, cs.signature);
  return encodeMlsMessage({ ...msg, publicMessage: { ...pm, content, auth: { ...pm.auth, signature } } } as MLSMessage);
}

describe("negative cases", () => {
  it("forged signature -> invalid_signature", async () => {
    const r = await createCommit({ state: h.state("alice@a.example"), cipherSuite: cs }, { wireAsPublicMessage: true });
    const bytes = mlsBytes(r.commit).slice();
    const m = decodePublicMessage(bytes);
    bytes[m.fcEnd + varLenHeader(m.signature.length).length + 3]! ^= 0x40;
    await expectRejected(h.engine, bytes, "invalid_signature");
  });

  it("signatures checked in parallel keep the sequential order of errors", async () => {
    const a = h.state("alice@a.example");
    const carol = await h.identity("carol@c.example");
    const r = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: carol.kp } }] });
    const flipLast = (b: Uint8Array) => {
      b[b.length - 1]! ^= 1;
      return b;
    };
    type Kp = { signature: Uint8Array; leafNode: { signature: Uint8Array } };
    const addedKp = (c: FramedContent): Kp => {
      if (c.contentType !== "commit") throw new Error("commit expected");
      const p = c.commit.proposals[0]!;
      if (p.proposalOrRefType !== "proposal" || p.proposal.proposalType !== "add") throw new Error("add expected");
      return p.proposal.add.keyPackage as unknown as Kp;
    };
    const resigned = (mutate: (c: FramedContent) => void) => resign(r.commit, a.signaturePrivateKey, a.groupContext, mutate, { leafIndex: 0 });
    // the KeyPackage's own signature, then its leaf's: each is reported
    let e = await expectRejected(h.engine, await resigned((c) => void flipLast(addedKp(c).signature)), "invalid_signature");
    expect(e.message).toContain("KeyPackage signature");
    e = await expectRejected(h.engine, await resigned((c) => void flipLast(addedKp(c).leafNode.signature)), "invalid_signature");
    expect(e.message).toContain("LeafNode signature of leaf 0");
    // a bad FramedContent signature wins over every later error (here an unknown proposal reference)
    const unknownRef = await resigned((c) => {
      if (c.contentType === "commit") c.commit.proposals.push({ proposalOrRefType: "reference", reference: new Uint8Array(32).fill(9) });
    });
    await expectRejected(h.engine, unknownRef, "unknown_proposal");
    const forged = unknownRef.slice();
    const m = decodePublicMessage(forged);
    forged[m.fcEnd + varLenHeader(m.signature.length).length + 3]! ^= 0x40;
    e = await expectRejected(h.engine, forged, "invalid_signature");
    expect(e.message).toContain("FramedContent signature");
    // and over the KeyPackage's
    const both = (await resigned((c) => void flipLast(addedKp(c).signature))).slice();
    const mb = decodePublicMessage(both);
    both[mb.fcEnd + varLenHeader(mb.signature.length).length + 3]! ^= 0x40;
    e = await expectRejected(h.engine, both, "invalid_signature");
    expect(e.message).toContain("FramedContent signature");
    // the untouched commit is accepted
    await processMessage(h.engine, mlsBytes(r.commit));
  });

  it("seeding: a bad leaf signature -> invalid_signature naming the leaf; a bad tree hash is reported first", async () => {
    for (const name of ["carol@c.example", "dave@d.example"]) {
      const id = await h.identity(name);
      await h.commit("alice@a.example", [{ proposalType: "add", add: { keyPackage: id.kp } }], [id]);
    }
    const s = h.engine;
    const tree = ratchetTreeBytes(s).slice();
    // flip the last byte of leaf 2's signature (leaf 2 = node 4)
    const t = PublicTree.decode(tree, s.crypto, { uniqueClientIds: true });
    const raw = t.leaf(2)!.raw;
    tree[raw.byteOffset - tree.byteOffset + raw.length - 1]! ^= 1;
    const bad = PublicTree.decode(tree, s.crypto, { uniqueClientIds: true });
    const gc = (treeHash: Uint8Array) => encodeGroupContext({ ...s.groupContext, treeHash });
    const seed = (treeHash: Uint8Array, verify?: "trusted") =>
      seedFromGroupContext({ groupContext: gc(treeHash), ratchetTree: tree, confirmationTag: s.confirmationTag }, verify === undefined ? {} : { verify });
    await expect(seed(bad.rootHash)).rejects.toMatchObject({ code: "invalid_signature", message: expect.stringContaining("LeafNode signature of leaf 2") });
    await expect(seed(s.tree.rootHash)).rejects.toMatchObject({ code: "tree_hash_mismatch" });
    // "trusted" (own snapshots) skips leaf signatures
    expect((await seed(bad.rootHash, "trusted")).tree.memberCount).toBe(4);
  });

  it("non-member sender -> not_member", async () => {
    const r = await createProposal(h.state("bob@b.example"), true, { proposalType: "remove", remove: { removed: 0 } }, cs);
    const bytes = await resign(r.message, h.state("bob@b.example").signaturePrivateKey, h.state("bob@b.example").groupContext, (c) => {
      c.sender = { senderType: "member", leafIndex: 5 };
    });
    await expectRejected(h.engine, bytes, "not_member");
  });

  it("wrong epoch -> WrongEpochError carrying the current epoch", async () => {
    const r = await createCommit({ state: h.state("alice@a.example"), cipherSuite: cs }, { wireAsPublicMessage: true });
    const old = h.engine;
    h.engine = await merge(old, await processMessage(old, mlsBytes(r.commit)));
    const err = await expectRejected(h.engine, mlsBytes(r.commit), "wrong_epoch");
    expect(err).toBeInstanceOf(WrongEpochError);
    expect((err as WrongEpochError).currentEpoch).toBe(2n);
    expect((err as WrongEpochError).messageEpoch).toBe(1n);
    // the old state is still usable (staging never touched it)
    expect(old.groupContext.epoch).toBe(1n);
    await processMessage(old, mlsBytes(r.commit));
  });

  it("bad parent hash -> invalid_parent_hash", async () => {
    const a = h.state("alice@a.example");
    const r = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true });
    const bytes = await resign(r.commit, a.signaturePrivateKey, a.groupContext, (c) => {
      if (c.contentType !== "commit" || c.commit.path === undefined) throw new Error("expected a path");
      c.commit.path.leafNode.parentHash = new Uint8Array(c.commit.path.leafNode.parentHash.length).fill(7);
    }, { leafIndex: 0 });
    await expectRejected(h.engine, bytes, "invalid_parent_hash");
  });

  it("duplicate encryption key in an UpdatePath leaf -> duplicate_key", async () => {
    const a = h.state("alice@a.example");
    const bobKey = h.engine.tree.leaf(1)!.leaf.hpkePublicKey;
    const r = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true });
    const bytes = await resign(r.commit, a.signaturePrivateKey, a.groupContext, (c) => {
      if (c.contentType !== "commit" || c.commit.path === undefined) throw new Error("expected a path");
      c.commit.path.leafNode.hpkePublicKey = bobKey;
    }, { leafIndex: 0 });
    await expectRejected(h.engine, bytes, "duplicate_key");
  });

  it("duplicate signature key in an Add -> duplicate_key", async () => {
    const bob = h.ids.get("bob@b.example")!;
    const dup = await h.identity("mallory@m.example", { sig: bob.sig });
    const r = await createProposal(h.state("alice@a.example"), true, { proposalType: "add", add: { keyPackage: dup.kp } }, cs);
    await expectRejected(h.engine, mlsBytes(r.message), "duplicate_key");
  });

  it("duplicate client identifier in an Add -> duplicate_client", async () => {
    const again = await h.identity("bob@b.example");
    const r = await createProposal(h.state("alice@a.example"), true, { proposalType: "add", add: { keyPackage: again.kp } }, cs);
    await expectRejected(h.engine, mlsBytes(r.message), "duplicate_client");
  });

  it("expired KeyPackage -> key_package_expired", async () => {
    const now = BigInt(Math.floor(Date.now() / 1000));
    const old = await h.identity("carol@c.example", { lifetime: { notBefore: now - 10_000n, notAfter: now - 3_600n } });
    const r = await createProposal(h.state("alice@a.example"), true, { proposalType: "add", add: { keyPackage: old.kp } }, cs);
    await expectRejected(h.engine, mlsBytes(r.message), "key_package_expired");
    // within the configured clock skew it is accepted
    await processMessage({ ...h.engine, options: { ...h.engine.options, clockSkewSeconds: 7_200 } }, mlsBytes(r.message));
  });

  it("extension no member supports -> unsupported_capability", async () => {
    const ext = { extensionType: 0xff0a, extensionData: new Uint8Array([1, 2, 3]) };
    const r = await createProposal(h.state("alice@a.example"), true, { proposalType: "group_context_extensions", groupContextExtensions: { extensions: [ext] } }, cs);
    await expectRejected(h.engine, mlsBytes(r.message), "unsupported_capability");
  });

  it("group context extensions without a path -> path_required", async () => {
    const r = await createCommit(
      { state: h.state("alice@a.example"), cipherSuite: cs },
      { wireAsPublicMessage: true, extraProposals: [{ proposalType: "group_context_extensions", groupContextExtensions: { extensions: [] } }] },
    );
    const m = decodeMlsMessage(mlsBytes(r.commit), 0)![0] as MlsPublicMessage;
    expect(m.publicMessage.content.contentType === "commit" && m.publicMessage.content.commit.path).toBeUndefined();
    await expectRejected(h.engine, mlsBytes(r.commit), "path_required");
  });

  it("two ExternalInit proposals -> invalid_commit", async () => {
    const a = h.state("alice@a.example");
    const r = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true });
    h.engine = await merge(h.engine, await processMessage(h.engine, mlsBytes(r.commit)), await (await import("./harness.js")).partialGroupInfoOf(r.newState, cs));
    const gi = decodeGroupInfo(groupInfoBytes(h.engine)!, 0)![0];
    const tree = decodeRatchetTree(ratchetTreeBytes(h.engine), 0)![0];
    const carol = await h.identity("carol@c.example");
    const { publicMessage } = await joinGroupExternal(gi, carol.kp, carol.priv, false, cs, tree);
    const msg: MLSMessage = { version: "mls10", wireformat: "mls_public_message", publicMessage };
    // sanity: the untouched external commit is accepted
    await processMessage(h.engine, mlsBytes(msg));
    const bytes = await resign(msg, carol.priv.signaturePrivateKey, gi.groupContext, (c) => {
      if (c.contentType !== "commit") throw new Error("commit expected");
      const ei = c.commit.proposals.find((p) => p.proposalOrRefType === "proposal" && p.proposal.proposalType === "external_init")!;
      c.commit.proposals.push(clone(ei));
    });
    await expectRejected(h.engine, bytes, "invalid_commit");
  });

  it("Remove of a blank leaf -> invalid_proposal", async () => {
    const a = h.state("alice@a.example");
    const r = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "remove", remove: { removed: 1 } }] });
    const bytes = await resign(r.commit, a.signaturePrivateKey, a.groupContext, (c) => {
      if (c.contentType !== "commit") throw new Error("commit expected");
      const p = c.commit.proposals[0]!;
      if (p.proposalOrRefType === "proposal" && p.proposal.proposalType === "remove") p.proposal.remove.removed = 3;
    }, { leafIndex: 0 });
    await expectRejected(h.engine, bytes, "invalid_proposal");
  });

  it("commit referencing a proposal the engine never saw -> unknown_proposal", async () => {
    const p = await createProposal(h.state("bob@b.example"), true, { proposalType: "remove", remove: { removed: 1 } }, cs);
    // alice received the proposal, the engine did not
    const { processMessage: tsProcess, acceptAll, emptyPskIndex } = await import("ts-mls");
    const alice = (await tsProcess(p.message as never, h.state("alice@a.example"), emptyPskIndex, acceptAll, cs)).newState;
    const r = await createCommit({ state: alice, cipherSuite: cs }, { wireAsPublicMessage: true });
    await expectRejected(h.engine, mlsBytes(r.commit), "unknown_proposal");
  });

  it("Update proposal by value from the committer -> invalid_commit; application data -> unsupported_content", async () => {
    const a = h.state("alice@a.example");
    const r = await createCommit({ state: a, cipherSuite: cs }, { wireAsPublicMessage: true });
    const bytes = await resign(r.commit, a.signaturePrivateKey, a.groupContext, (c) => {
      if (c.contentType !== "commit" || c.commit.path === undefined) throw new Error("expected a path");
      const leaf = { ...c.commit.path.leafNode, leafNodeSource: "update" as const };
      c.commit.proposals.push({ proposalOrRefType: "proposal", proposal: { proposalType: "update", update: { leafNode: leaf as never } } });
    }, { leafIndex: 0 });
    await expectRejected(h.engine, bytes, "invalid_commit");
    await expectRejected(h.engine, Uint8Array.of(0, 1, 0, 2, 0), "unsupported_wireformat");
  });

  it("PartialGroupInfo not signed by the committer -> invalid_signature; the state is kept", async () => {
    const r = await createCommit({ state: h.state("alice@a.example"), cipherSuite: cs }, { wireAsPublicMessage: true });
    const staged = await processMessage(h.engine, mlsBytes(r.commit));
    const { partialGroupInfoOf } = await import("./harness.js");
    const pgi = (await partialGroupInfoOf(r.newState, cs)).slice();
    pgi[pgi.length - 5]! ^= 1;
    const before = encodeGroupState(h.engine);
    await expect(merge(h.engine, staged, pgi)).rejects.toMatchObject({ code: "invalid_signature" });
    expect(toHex(encodeGroupState(h.engine))).toBe(toHex(before));
    // the untouched PartialGroupInfo merges
    await merge(h.engine, staged, await partialGroupInfoOf(r.newState, cs));
  });

  it("unknown external sender index -> not_member; message for another group -> wrong_group", async () => {
    const r = await createProposal(h.state("bob@b.example"), true, { proposalType: "remove", remove: { removed: 0 } }, cs);
    const ctx = h.state("bob@b.example").groupContext;
    const ext = await resign(r.message, h.state("bob@b.example").signaturePrivateKey, ctx, (c) => {
      c.sender = { senderType: "external", senderIndex: 0 };
    });
    // an external sender's message carries no membership_tag
    const m = decodeMlsMessage(ext, 0)![0] as MlsPublicMessage;
    const bytes = encodeMlsMessage({ ...m, publicMessage: { ...m.publicMessage, senderType: "external" } } as MLSMessage);
    await expectRejected(h.engine, bytes, "not_member");
    const other = await resign(r.message, h.state("bob@b.example").signaturePrivateKey, ctx, (c) => {
      c.groupId = new TextEncoder().encode("another-group");
    });
    await expectRejected(h.engine, other, "wrong_group");
  });
});
