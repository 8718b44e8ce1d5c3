// RFC 9420 test vectors (mlswg/mls-implementations) for what a public engine computes.
import { describe, it, expect, afterAll } from "vitest";
import { decodeUpdatePath } from "ts-mls/updatePath.js";
import { decodeProposal } from "ts-mls/proposal.js";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import type { GroupContext } from "ts-mls";
import { createHmac } from "node:crypto";
import { engineCrypto } from "../../src/mls/crypto.js";
import { PublicTree, leafEntry } from "../../src/mls/tree.js";
import { mergeUpdatePath, seedFromGroupContext, transcriptHashes, verifyPublicMessageSignature } from "../../src/mls/group.js";
import { decodePublicMessage, pathInfoOf } from "../../src/mls/codec.js";
import { leafToNode, nodeWidth } from "../../src/mls/treemath.js";
import { hex, loadVector, suiteName, toHex, SkipLog } from "./helpers.js";

const opts = { uniqueClientIds: false };
const skips = new SkipLog();
afterAll(() => skips.report("vectors"));

function context(suite: number, groupId: Uint8Array, epoch: bigint, treeHash: Uint8Array, confirmed: Uint8Array): GroupContext {
  return { version: "mls10", cipherSuite: suiteName(suite), groupId, epoch, treeHash, confirmedTranscriptHash: confirmed, extensions: [] };
}

describe("tree-validation.json", () => {
  const vs = loadVector<{ cipher_suite: number; tree: string; group_id: string; tree_hashes: string[]; resolutions: number[][] }[]>("tree-validation.json");
  it(`checks resolutions, tree hashes, parent hashes and leaf signatures of ${vs.length} trees`, async () => {
    let n = 0;
    for (const v of vs) {
      const c = await engineCrypto(suiteName(v.cipher_suite));
      const tree = PublicTree.decode(hex(v.tree), c, opts);
      const width = nodeWidth(tree.leafWidth);
      expect(v.tree_hashes.length).toBeLessThanOrEqual(width);
      const ed = tree.edit();
      for (let i = 0; i < v.tree_hashes.length; i++) {
        expect(toHex(ed.hashOf(i))).toBe(v.tree_hashes[i]);
        expect(ed.resolution(i)).toEqual(v.resolutions[i]);
        expect(ed.resolutionSize(i)).toBe(v.resolutions[i]!.length);
      }
      // full verification (parent hashes, unmerged leaves, every leaf signature with group_id)
      await seedFromGroupContext(
        { groupContext: context(v.cipher_suite, hex(v.group_id), 0n, tree.rootHash, new Uint8Array()), ratchetTree: hex(v.tree), confirmationTag: new Uint8Array(32) },
        opts,
      );
      n++;
    }
    expect(n).toBe(vs.length);
  });
});

describe("tree-operations.json", () => {
  const vs = loadVector<{ cipher_suite: number; tree_before: string; proposal: string; proposal_sender: number; tree_after: string; tree_hash_before: string; tree_hash_after: string }[]>("tree-operations.json");
  it(`applies ${vs.length} add/remove/update proposals`, async () => {
    for (const v of vs) {
      const c = await engineCrypto(suiteName(v.cipher_suite));
      const tree = PublicTree.decode(hex(v.tree_before), c, opts);
      expect(toHex(tree.rootHash)).toBe(v.tree_hash_before);
      const [p] = decodeProposal(hex(v.proposal), 0)!;
      const ed = tree.edit();
      if (p.proposalType === "add") ed.addLeaf(leafEntry(p.add.keyPackage.leafNode));
      else if (p.proposalType === "update") ed.updateLeaf(v.proposal_sender, leafEntry(p.update.leafNode));
      else if (p.proposalType === "remove") {
        ed.removeLeaf(p.remove.removed);
        ed.truncate();
      } else throw new Error(`unexpected proposal ${String(p.proposalType)}`);
      const after = ed.freeze();
      expect(toHex(after.encode())).toBe(v.tree_after);
      expect(toHex(after.rootHash)).toBe(v.tree_hash_after);
    }
  });
});

describe("treekem.json (public part)", () => {
  const vs = loadVector<
    { cipher_suite: number; group_id: string; epoch: number; confirmed_transcript_hash: string; ratchet_tree: string; update_paths: { sender: number; update_path: string; tree_hash_after: string }[] }[]
  >("treekem.json");
  it(`verifies and merges the update paths of ${vs.length} trees`, async () => {
    let paths = 0;
    for (const v of vs) {
      const c = await engineCrypto(suiteName(v.cipher_suite));
      const tree = PublicTree.decode(hex(v.ratchet_tree), c, opts);
      for (const up of v.update_paths) {
        const [path] = decodeUpdatePath(hex(up.update_path), 0)!;
        const ed = tree.edit();
        const entry = leafEntry(path.leafNode);
        ed.setNode(leafToNode(up.sender), entry);
        mergeUpdatePath(ed, up.sender, pathInfoOf(path), new Set());
        const after = ed.freeze();
        expect(toHex(after.rootHash)).toBe(up.tree_hash_after);
        // the original tree is untouched by the staged edit
        expect(tree.leaf(up.sender)?.leaf.hpkePublicKey).not.toEqual(path.leafNode.hpkePublicKey);
        paths++;
      }
    }
    expect(paths).toBeGreaterThan(0);
  });
  it("rejects an update path whose leaf parent_hash was altered", async () => {
    const v = vs[0]!;
    const c = await engineCrypto(suiteName(v.cipher_suite));
    const tree = PublicTree.decode(hex(v.ratchet_tree), c, opts);
    const up = v.update_paths[0]!;
    const [path] = decodeUpdatePath(hex(up.update_path), 0)!;
    const bad = { ...path, leafNode: { ...path.leafNode, parentHash: new Uint8Array(path.leafNode.parentHash.length) } };
    const ed = tree.edit();
    ed.setNode(leafToNode(up.sender), leafEntry(bad.leafNode));
    expect(() => mergeUpdatePath(ed, up.sender, pathInfoOf(bad), new Set())).toThrow(/invalid_parent_hash/);
  });
});

describe("transcript-hashes.json", () => {
  const vs = loadVector<{ cipher_suite: number; confirmation_key: string; authenticated_content: string; interim_transcript_hash_before: string; confirmed_transcript_hash_after: string; interim_transcript_hash_after: string }[]>(
    "transcript-hashes.json",
  );
  it(`computes confirmed and interim transcript hashes for ${vs.length} suites`, async () => {
    for (const v of vs) {
      const c = await engineCrypto(suiteName(v.cipher_suite));
      const m = decodePublicMessage(Uint8Array.from([0, 1, ...hex(v.authenticated_content)]), false);
      const { confirmed, interim } = transcriptHashes(c, hex(v.interim_transcript_hash_before), m);
      expect(toHex(confirmed)).toBe(v.confirmed_transcript_hash_after);
      expect(toHex(interim)).toBe(v.interim_transcript_hash_after);
      const tag = createHmac(c.hashName, hex(v.confirmation_key)).update(confirmed).digest();
      expect(toHex(tag)).toBe(toHex(m.confirmationTag!));
    }
  });
});

describe("message-protection.json (public messages)", () => {
  const vs = loadVector<{ cipher_suite: number; group_id: string; epoch: number; tree_hash: string; confirmed_transcript_hash: string; signature_pub: string; proposal_pub: string; commit_pub: string }[]>(
    "message-protection.json",
  );
  it(`verifies proposal_pub and commit_pub signatures for ${vs.length} suites`, async () => {
    for (const v of vs) {
      const c = await engineCrypto(suiteName(v.cipher_suite));
      const gc = encodeGroupContext(context(v.cipher_suite, hex(v.group_id), BigInt(v.epoch), hex(v.tree_hash), hex(v.confirmed_transcript_hash)));
      expect(await verifyPublicMessageSignature(c, hex(v.proposal_pub), gc, hex(v.signature_pub))).toBe(true);
      expect(await verifyPublicMessageSignature(c, hex(v.commit_pub), gc, hex(v.signature_pub))).toBe(true);
      const other = encodeGroupContext(context(v.cipher_suite, hex(v.group_id), BigInt(v.epoch) + 1n, hex(v.tree_hash), hex(v.confirmed_transcript_hash)));
      expect(await verifyPublicMessageSignature(c, hex(v.commit_pub), other, hex(v.signature_pub))).toBe(false);
    }
  });
});
