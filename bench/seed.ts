// Seeding benchmark with a breakdown: loads a cached group (bench/.cache/group-N.bin,
// built by bench/engine.ts) and times seedFromGroupInfo with full verification,
// its parts one by one, and the signature floor measured in the same run.
//
//   npx tsx --expose-gc --stack-size=7800 bench/seed.ts [--n=10000] [--iters=7]
//
// floor: the same leaves' signatures verified with node:crypto on the libuv
// threadpool (KeyObjects made beforehand, all jobs submitted at once) - what
// full verification costs at least with node:crypto on this machine.
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { createGroupInfoWithExternalPub, getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { decodeGroupState as decodeClient } from "ts-mls/clientState.js";
import { defaultClientConfig } from "ts-mls/clientConfig.js";
import { groupInfoEncoder } from "ts-mls/groupInfo.js";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { nodeCryptoProvider } from "../src/mls/crypto.js";
import { seedFromGroupInfo } from "../src/mls/group.js";
import { ratchetTreeBytes, decodeGroupState } from "../src/mls/state.js";
import { PublicTree } from "../src/mls/tree.js";
import { PVec } from "../src/mls/pvec.js";
import { decodeLeafNodeFast, decodeParentNodeFast } from "../src/mls/codec.js";
import { ed25519Key, leafSignatureJobs, signatureFloor } from "./sigfloor.js";
import { clientIdOf } from "../src/mls/identity.js";
import { determineLength } from "ts-mls/codec/variableLength.js";

const arg = (k: string, d: number) => Number(process.argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d);
const n = arg("n", 10000);
const iters = arg("iters", 7);
const CACHE = new URL("./.cache/", import.meta.url).pathname;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const b = new Uint8Array(readFileSync(`${CACHE}group-${n}.bin`));
const parts: Uint8Array[] = [];
for (let o = 0; o < b.length; ) {
  const len = new DataView(b.buffer, b.byteOffset + o).getUint32(0);
  parts.push(b.subarray(o + 4, o + 4 + len));
  o += 4 + len;
}
const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"), nodeCryptoProvider);
const alice = { ...decodeClient(parts[0]!, 0)![0], clientConfig: defaultClientConfig };
const engine = await decodeGroupState(parts[2]!);
const gi = encode(groupInfoEncoder)(await createGroupInfoWithExternalPub(alice, [], cs));
const treeBytes = ratchetTreeBytes(engine);
const crypto = engine.crypto;
const opts = { uniqueClientIds: true };

const jobs = leafSignatureJobs(engine.tree, engine.groupContext.groupId);
const floor = () => signatureFloor(jobs);

/** Parse only: the node loop of PublicTree.decode. */
function parseOnly(): number {
  const t = performance.now();
  const { length, lengthFieldSize } = determineLength(treeBytes, 0);
  let o = lengthFieldSize;
  let pos = 0;
  while (o < lengthFieldSize + length) {
    if (treeBytes[o++] === 0) {
      pos++;
      continue;
    }
    const nt = treeBytes[o++];
    if (nt === 1) {
      const [leaf, l] = decodeLeafNodeFast(treeBytes, o);
      clientIdOf(leaf.credential);
      o += l;
    } else o += decodeParentNodeFast(treeBytes, o)[1];
    pos++;
  }
  return performance.now() - t;
}

function timed<T>(fn: () => T): [number, T] {
  const t = performance.now();
  const r = fn();
  return [performance.now() - t, r];
}

const rows: Record<string, number[]> = {};
const add = (k: string, v: number) => (rows[k] ??= []).push(v);
await seedFromGroupInfo(gi, treeBytes); // warm-up
await floor();
for (let i = 0; i < iters; i++) {
  const f0 = process.cpuUsage();
  add("floor", await floor());
  const fc = process.cpuUsage(f0);
  add("floor cpu", (fc.user + fc.system) / 1000);
  const c0 = process.cpuUsage();
  const [tSeed] = await (async () => {
    const t = performance.now();
    await seedFromGroupInfo(gi, treeBytes);
    return [performance.now() - t];
  })();
  const cpu = process.cpuUsage(c0);
  add("seed", tSeed);
  add("seed cpu", (cpu.user + cpu.system) / 1000);
  const t0 = performance.now();
  await seedFromGroupInfo(gi, treeBytes, { verify: "trusted" });
  add("trusted", performance.now() - t0);
  add("parse", parseOnly());
  const [tDecode, tree] = timed(() => PublicTree.decode(treeBytes, crypto, opts));
  add("decode+index+hash", tDecode);
  const unhashed = new PublicTree(crypto, opts, tree.leafWidth, tree.nodes, PVec.from(new Array(tree.nodes.length).fill(undefined)), tree.encKeys, tree.sigKeys, tree.clientIds, tree.memberCount, tree.caps, 0);
  add("tree hash", timed(() => unhashed.edit().hashOf(unhashed.root))[0]);
  add("unmerged leaves", timed(() => tree.edit().verifyUnmergedLeaves())[0]);
  add("parent hashes", timed(() => tree.edit().verifyAllParentHashes())[0]);
  add("key import (JWK)", timed(() => jobs.forEach((j) => ed25519Key(j.publicKey)))[0]);
}
const f = (x: number) => x.toFixed(x < 10 ? 1 : 0);
console.log(`seed ${n} members (${jobs.length} leaf signatures), ${cpus().length} CPUs, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}, medians of ${iters} (ms):`);
for (const [k, v] of Object.entries(rows)) console.log(`  ${k.padEnd(20)} ${f(median(v)).padStart(7)}   (${v.map(f).join(" ")})`);
const seedM = median(rows.seed!);
const floorM = median(rows.floor!);
console.log(`  seed = floor + ${f(seedM - floorM)} ms`);
