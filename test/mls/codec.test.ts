// The engine's LeafNode / ParentNode decoders against ts-mls's: same values,
// and the same inputs accepted and rejected (random nodes, then mutations).
import { describe, it, expect } from "vitest";
import fc from "fast-check";
import type { LeafNode, ParentNode } from "ts-mls";
import { encodeLeafNode, decodeLeafNode } from "ts-mls/leafNode.js";
import { encodeKeyPackage, decodeKeyPackage } from "ts-mls/keyPackage.js";
import { encodeParentNode, decodeParentNode } from "ts-mls/parentNode.js";
import { ciphersuites } from "ts-mls/crypto/ciphersuite.js";
import { decodeKeyPackageFast, decodeLeafNodeFast, decodeParentNodeFast, encodedKeyPackage, encodedLeafNode } from "../../src/mls/codec.js";

const bytes = (max: number) => fc.uint8Array({ maxLength: max });
// some vectors long enough for the 2-byte length form
const longish = fc.oneof(bytes(40), fc.uint8Array({ minLength: 60, maxLength: 300 }));
const u16 = fc.integer({ min: 0, max: 0xffff });
const suite = fc.oneof(fc.constantFrom(1, 2, 3, 7, 77, 88), u16).map((n) => n);
const credential = fc.oneof(
  longish.map((identity) => ({ credentialType: "basic" as const, identity })),
  fc.array(longish, { maxLength: 3 }).map((certificates) => ({ credentialType: "x509" as const, certificates })),
);
const extension = fc.record({ extensionType: fc.oneof(fc.constantFrom(1, 2, 3, 4, 5), u16), extensionData: bytes(20) });

// ts-mls's names for known suites; unknown ones travel as decimal strings
const suiteByNumber = new Map<number, string>(Object.entries(ciphersuites).map(([k, v]) => [v, k]));
const suiteName = (n: number): string => suiteByNumber.get(n) ?? String(n);

/** Random LeafNodes (every source, credential kind, GREASE-like values), encoded by ts-mls. */
const leafArb = fc
  .record({
    hpkePublicKey: bytes(40),
    signaturePublicKey: bytes(40),
    credential,
    suites: fc.array(suite, { maxLength: 25 }),
    extensions: fc.array(u16, { maxLength: 4 }),
    proposals: fc.array(u16, { maxLength: 4 }),
    credentials: fc.array(fc.oneof(fc.constantFrom(1, 2), u16), { maxLength: 4 }),
    source: fc.constantFrom(1, 2, 3),
    notBefore: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    notAfter: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    parentHash: bytes(40),
    leafExtensions: fc.array(extension, { maxLength: 3 }),
    signature: longish,
  })
  .map((r) => encodeLeaf(r));

function encodeLeaf(r: {
  hpkePublicKey: Uint8Array;
  signaturePublicKey: Uint8Array;
  credential: LeafNode["credential"];
  suites: number[];
  extensions: number[];
  proposals: number[];
  credentials: number[];
  source: number;
  notBefore: bigint;
  notAfter: bigint;
  parentHash: Uint8Array;
  leafExtensions: { extensionType: number; extensionData: Uint8Array }[];
  signature: Uint8Array;
}): Uint8Array {
  const extName = ["", "application_id", "ratchet_tree", "required_capabilities", "external_pub", "external_senders"];
  const base = {
    hpkePublicKey: r.hpkePublicKey,
    signaturePublicKey: r.signaturePublicKey,
    credential: r.credential,
    capabilities: {
      versions: ["mls10" as const],
      ciphersuites: r.suites.map(suiteName) as LeafNode["capabilities"]["ciphersuites"],
      extensions: r.extensions,
      proposals: r.proposals,
      credentials: r.credentials.map((c) => (c === 1 ? "basic" : c === 2 ? "x509" : String(c))) as LeafNode["capabilities"]["credentials"],
    },
    extensions: r.leafExtensions.map((e) => ({
      extensionType: (e.extensionType >= 1 && e.extensionType <= 5 ? extName[e.extensionType] : e.extensionType) as LeafNode["extensions"][number]["extensionType"],
      extensionData: e.extensionData,
    })),
    signature: r.signature,
  };
  const leaf: LeafNode =
    r.source === 1
      ? { ...base, leafNodeSource: "key_package", lifetime: { notBefore: r.notBefore, notAfter: r.notAfter } }
      : r.source === 2
        ? { ...base, leafNodeSource: "update" }
        : { ...base, leafNodeSource: "commit", parentHash: r.parentHash };
  return encodeLeafNode(leaf);
}

/** ts-mls's result, or undefined when it rejects (by returning undefined or throwing). */
function tsmls<T>(dec: (b: Uint8Array, o: number) => [T, number] | undefined, b: Uint8Array): [T, number] | undefined {
  try {
    return dec(b, 0);
  } catch {
    return undefined;
  }
}
function fast<T>(dec: (b: Uint8Array, o: number) => [T, number], b: Uint8Array): [T, number] | undefined {
  try {
    return dec(b, 0);
  } catch {
    return undefined;
  }
}

/** Byte flips, truncations and insertions of an encoding. */
const mutated = (enc: fc.Arbitrary<Uint8Array>) =>
  fc.tuple(enc, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("set", "cut", "insert")), { minLength: 1, maxLength: 3 })).map(([b, muts]) => {
    let out = Uint8Array.from(b);
    for (const [pos, v, kind] of muts) {
      if (out.length === 0) break;
      const i = pos % out.length;
      if (kind === "set") out[i] = v;
      else if (kind === "cut") out = out.subarray(0, i);
      else out = Uint8Array.from([...out.subarray(0, i), v, ...out.subarray(i)]);
    }
    return out;
  });

/** KeyPackages around random leaves (mostly key_package ones), encoded by ts-mls. */
const keyPackageArb = fc
  .tuple(leafArb, fc.constantFrom(1, 2, 3, 77, 0x0a0a), bytes(40), fc.array(extension, { maxLength: 3 }), longish)
  .map(([leafBytes, suite, initKey, exts, signature]) => {
    const leafNode = decodeLeafNode(leafBytes, 0)![0];
    const extensions = exts.map((e) => ({ extensionType: e.extensionType, extensionData: e.extensionData })) as LeafNode["extensions"];
    return encodeKeyPackage({ version: "mls10", cipherSuite: suiteName(suite) as never, initKey, leafNode: leafNode as never, extensions, signature });
  });

const parentArb = fc
  .record({ hpkePublicKey: longish, parentHash: bytes(64), unmergedLeaves: fc.array(fc.nat(), { maxLength: 20 }) })
  .map((p: ParentNode) => encodeParentNode(p));

describe("fast LeafNode / ParentNode decoders", () => {
  it("decode valid LeafNodes exactly as ts-mls", () => {
    fc.assert(
      fc.property(leafArb, (b) => {
        const want = tsmls(decodeLeafNode, b);
        expect(want).toBeDefined();
        expect(fast(decodeLeafNodeFast, b)).toEqual(want);
      }),
      { numRuns: 400 },
    );
  });
  it("accept and reject mutated LeafNodes as ts-mls does", () => {
    fc.assert(
      fc.property(mutated(leafArb), (b) => {
        expect(fast(decodeLeafNodeFast, b)).toEqual(tsmls(decodeLeafNode, b));
      }),
      { numRuns: 3000 },
    );
  });
  it("decode valid KeyPackages exactly as ts-mls", () => {
    fc.assert(
      fc.property(keyPackageArb, (b) => {
        const want = tsmls(decodeKeyPackage, b);
        // ts-mls itself refuses KeyPackages whose leaf is not a key_package leaf
        if (want === undefined) expect(decodeKeyPackageFast(b, 0)).toBeUndefined();
        else {
          expect(decodeKeyPackageFast(b, 0)).toEqual(want);
          expect(encodedKeyPackage(want[0])).toBeUndefined(); // ts-mls's objects are not ours
        }
      }),
      { numRuns: 400 },
    );
  });
  it("decode KeyPackages as ts-mls whenever they take them, and remember canonical encodings", () => {
    fc.assert(
      fc.property(fc.oneof(keyPackageArb, mutated(keyPackageArb)), (b) => {
        const got = decodeKeyPackageFast(b, 0);
        const want = tsmls(decodeKeyPackage, b);
        if (got === undefined) return; // ts-mls's decoder handles it (and its odd cases) instead
        expect(got).toEqual(want);
        const kept = encodedKeyPackage(got[0]);
        if (kept !== undefined) {
          // byte-identical to ts-mls's re-encoding, which the engine would otherwise sign and hash over
          expect(kept.bytes).toEqual(encodeKeyPackage(got[0]));
          expect(encodedLeafNode(got[0].leafNode)).toEqual(encodeLeafNode(got[0].leafNode));
        }
      }),
      { numRuns: 3000 },
    );
  });
  it("remember a LeafNode's encoding only when ts-mls would write the same bytes", () => {
    fc.assert(
      fc.property(fc.oneof(leafArb, mutated(leafArb)), (b) => {
        const got = fast((x, o) => decodeLeafNodeFast(x, o, true), b);
        if (got === undefined) return;
        const kept = encodedLeafNode(got[0]);
        if (kept !== undefined) expect(kept).toEqual(encodeLeafNode(got[0]));
        else expect(encodeLeafNode(got[0])).not.toEqual(b.subarray(0, got[1]));
      }),
      { numRuns: 3000 },
    );
  });
  it("decode ParentNodes exactly as ts-mls, valid or mutated", () => {
    fc.assert(
      fc.property(fc.oneof(parentArb, mutated(parentArb)), (b) => {
        expect(fast(decodeParentNodeFast, b)).toEqual(tsmls(decodeParentNode, b));
      }),
      { numRuns: 2000 },
    );
  });
});
