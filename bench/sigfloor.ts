// The signature floor of seeding, measured in the same run as the seed: the
// same leaves' LeafNode signatures verified with node:crypto on the libuv
// threadpool (KeyObjects made beforehand, every job submitted at once). No
// seed that verifies every leaf with node:crypto can beat it on the machine.
import * as nodeCrypto from "node:crypto";
import { concat, u32, varLen, varLenHeader } from "../src/mls/codec.js";
import type { PublicTree } from "../src/mls/tree.js";

export interface SigJob {
  readonly publicKey: Uint8Array;
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
}

const LABEL = new TextEncoder().encode("MLS 1.0 LeafNodeTBS");

/** (key, SignContent("LeafNodeTBS", LeafNodeTBS), signature) of every leaf, as the seed verifies them. */
export function leafSignatureJobs(tree: PublicTree, groupId: Uint8Array): SigJob[] {
  const jobs: SigJob[] = [];
  for (let li = 0; li < tree.leafWidth; li++) {
    const e = tree.leaf(li);
    if (e === undefined) continue;
    const sl = e.leaf.signature.length;
    const body = e.raw.subarray(0, e.raw.length - varLenHeader(sl).length - sl);
    const tbs = e.leaf.leafNodeSource === "key_package" ? body : concat(body, varLen(groupId), u32(li));
    jobs.push({ publicKey: e.leaf.signaturePublicKey, message: concat(varLen(LABEL), varLen(tbs)), signature: e.leaf.signature });
  }
  return jobs;
}

/** Ed25519 KeyObject from a raw key (JWK import). */
export const ed25519Key = (raw: Uint8Array): nodeCrypto.KeyObject =>
  nodeCrypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(raw).toString("base64url") }, format: "jwk" });

/** Wall time (ms) of verifying every job on the threadpool (one callback each, no promise per job); KeyObjects are made before the clock starts. */
export async function signatureFloor(jobs: readonly SigJob[]): Promise<number> {
  const keys = jobs.map((j) => ed25519Key(j.publicKey));
  const t = performance.now();
  let bad = 0;
  await new Promise<void>((resolve) => {
    let pending = jobs.length;
    if (pending === 0) resolve();
    jobs.forEach((j, i) =>
      nodeCrypto.verify(null, j.message, keys[i]!, j.signature, (err, ok) => {
        if (err !== null || !ok) bad++;
        if (--pending === 0) resolve();
      }),
    );
  });
  if (bad > 0) throw new Error(`signature floor: ${bad} signatures did not verify`);
  return performance.now() - t;
}
