// Public group engine benchmark: engine vs a ts-mls member on the same commits.
//
//   npx tsx --expose-gc bench/engine.ts            # 100 and 1,000 members
//   npx tsx --expose-gc --stack-size=7800 bench/engine.ts --big   # also 10,000 members (cached in bench/.cache/)
//   npx tsx --expose-gc bench/engine.ts --sizes=100,500
//   npx tsx --expose-gc bench/engine.ts --sizes=100000     # 100,000 members (bench/biggroup.ts)
//
// Groups above 10,000 members are not built with ts-mls (a ts-mls member
// needs seconds per commit at 10,000 members): their KeyPackages come from
// bench/biggroup.ts (ts-mls's KeyPackage code on node:crypto, cached in
// bench/.cache/), the tree is the one a single Add commit of everyone makes,
// and the creator's add-1 commits are signed by its key (bench/biggroup.ts
// Committer). The ts-mls columns and the path-update commit are not measured there.
//
// Built groups (ts-mls states + engine snapshot) are cached in bench/.cache/
// too: the first --big run takes ~5 minutes, later ones about one.
//
// Reports medians. Groups are built with real ts-mls clients: one commit adds
// every member, a second member joins from the Welcome with the engine's tree.
// "sig floor": the seed's leaf signatures alone, verified on the threadpool in
// the same run (bench/sigfloor.ts); bench/seed.ts breaks the seed down further.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import {
  acceptAll,
  createCommit,
  createGroup,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  processMessage as tsProcess,
  type CiphersuiteImpl,
  type ClientState,
  type KeyPackage,
  type PrivateKeyPackage,
} from "ts-mls";
import { decodeKeyPackage, encodeKeyPackage } from "ts-mls/keyPackage.js";
import { encodeGroupState as encodeClient, decodeGroupState as decodeClient } from "ts-mls/clientState.js";
import { defaultClientConfig } from "ts-mls/clientConfig.js";
import { encodeRatchetTree, decodeRatchetTree } from "ts-mls/ratchetTree.js";
import { groupInfoEncoder } from "ts-mls/groupInfo.js";
import { createGroupInfoWithExternalPub } from "ts-mls";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { nodeCryptoProvider } from "../src/mls/crypto.js";
import { merge, processMessage, seedFromGroupInfo, type GroupState } from "../src/mls/group.js";
import { ratchetTreeBytes, encodeGroupState, decodeGroupState } from "../src/mls/state.js";
import { leafSignatureJobs, signatureFloor } from "./sigfloor.js";
import { bigMembers, Committer, SPARE_MEMBERS } from "./biggroup.js";

const SUITE = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519" as const;
const args = process.argv.slice(2);
const big = args.includes("--big");
const sizesArg = args.find((a) => a.startsWith("--sizes="));
const huge = args.includes("--huge");
const sizes =
  sizesArg !== undefined ? sizesArg.slice(8).split(",").map(Number) : [100, 1000, ...(big ? [10000] : []), ...(huge ? [100000] : [])];
const CACHE = new URL("./.cache/", import.meta.url).pathname;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (ms: number): string => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));

async function time<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const r = await fn();
  return [performance.now() - t, r];
}

async function timeMany(n: number, fn: () => Promise<unknown>, warmUp = 1): Promise<number> {
  for (let i = 0; i < warmUp; i++) await fn();
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push((await time(fn))[0]);
  return median(xs);
}

interface Kp {
  kp: KeyPackage;
  priv: PrivateKeyPackage;
}

function lv(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + b.length);
  new DataView(out.buffer).setUint32(0, b.length);
  out.set(b, 4);
  return out;
}

/** N KeyPackages, cached on disk (generation dominates setup time for big groups). */
async function keyPackages(n: number, cs: CiphersuiteImpl): Promise<Kp[]> {
  const file = `${CACHE}kps-${n}.bin`;
  if (existsSync(file)) {
    const b = new Uint8Array(readFileSync(file));
    const out: Kp[] = [];
    let o = 0;
    const next = () => {
      const len = new DataView(b.buffer, b.byteOffset + o).getUint32(0);
      const v = b.subarray(o + 4, o + 4 + len);
      o += 4 + len;
      return v;
    };
    while (o < b.length) {
      const kp = decodeKeyPackage(next(), 0)![0];
      out.push({ kp, priv: { initPrivateKey: next(), hpkePrivateKey: next(), signaturePrivateKey: next() } });
    }
    if (out.length === n) return out;
  }
  const out: Kp[] = [];
  const t = performance.now();
  for (let i = 0; i < n; i++) {
    const id = new TextEncoder().encode(`user${i}:dev@bench.example`);
    const { publicPackage, privatePackage } = await generateKeyPackage({ credentialType: "basic", identity: id }, defaultCapabilities(), defaultLifetime, [], cs);
    out.push({ kp: publicPackage, priv: privatePackage });
    if (i > 0 && i % 2000 === 0) console.error(`  generated ${i}/${n} KeyPackages (${((performance.now() - t) / 1000).toFixed(0)} s)`);
  }
  mkdirSync(CACHE, { recursive: true });
  const parts = out.flatMap((k) => [lv(encodeKeyPackage(k.kp)), lv(k.priv.initPrivateKey), lv(k.priv.hpkePrivateKey), lv(k.priv.signaturePrivateKey)]);
  writeFileSync(file, Buffer.concat(parts));
  return out;
}

interface Row {
  n: number;
  engineAdd: number;
  tsAdd: number;
  enginePath: number;
  tsPath: number;
  seed: number;
  floor: number;
  restore: number;
  heapMB: number;
  buildS: number;
  pathCiphertexts: number;
}

/** JS heap plus ArrayBuffer memory (key and leaf bytes live in ArrayBuffers). */
function heapUsed(): number {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g !== undefined) {
    g();
    g();
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Above 10,000 members: the synthetic group of bench/biggroup.ts (no ts-mls member). */
async function runSynthetic(n: number): Promise<Row> {
  console.error(`\n== ${n} members (synthetic: bench/biggroup.ts)`);
  const tb = performance.now();
  const people = await bigMembers(n + SPARE_MEMBERS, "bench.example");
  const creator = await Committer.create(people[0]!, new TextEncoder().encode(`bench-${n}`));
  const { groupInfo: gi, ratchetTree: treeBytes } = await creator.seed(people.slice(0, n), []);
  const buildS = (performance.now() - tb) / 1000;
  console.error(`  group ready in ${buildS.toFixed(1)} s`);
  const engine = creator.state!;

  // seeding from GroupInfo + tree (full verification), alternating with the signature floor
  const jobs = leafSignatureJobs(engine.tree, engine.groupContext.groupId);
  await signatureFloor(jobs);
  const seeds: number[] = [];
  const floors: number[] = [];
  for (let i = 0; i < 3; i++) {
    floors.push(await signatureFloor(jobs));
    seeds.push((await time(() => seedFromGroupInfo(gi, treeBytes)))[0]);
  }
  const snapshot = encodeGroupState(engine);
  const restore = await timeMany(3, () => decodeGroupState(snapshot));

  // add-1 commit by the creator (no path), processed by the engine
  const add = await creator.addCommit([people[n]!.keyPackage]);
  const engineAdd = await timeMany(50, async () => merge(engine, await processMessage(engine, add.commitBytes)), 10);

  // heap of one parsed group
  const before = heapUsed();
  let held: GroupState | undefined = await seedFromGroupInfo(gi, treeBytes.slice(), { verify: "trusted" });
  const after = heapUsed();
  const heapMB = (after - before) / (1024 * 1024);
  if (held.tree.memberCount !== n) throw new Error("unexpected member count");
  held = undefined;
  return { n, engineAdd, tsAdd: Number.NaN, enginePath: Number.NaN, tsPath: Number.NaN, seed: median(seeds), floor: median(floors), restore, heapMB, buildS, pathCiphertexts: 0 };
}

async function runSize(n: number, cs: CiphersuiteImpl): Promise<Row> {
  if (n > 10_000) return runSynthetic(n);
  console.error(`\n== ${n} members`);
  const tb = performance.now();
  const kps = await keyPackages(n + 1, cs); // n-1 joiners, 1 spare to add, 1 creator
  let alice: ClientState;
  let bob: ClientState;
  let engine: GroupState;
  const groupFile = `${CACHE}group-${n}.bin`;
  if (existsSync(groupFile)) {
    // alice's and bob's ts-mls states and the engine snapshot, as built before
    const b = new Uint8Array(readFileSync(groupFile));
    const parts: Uint8Array[] = [];
    for (let o = 0; o < b.length; ) {
      const len = new DataView(b.buffer, b.byteOffset + o).getUint32(0);
      parts.push(b.subarray(o + 4, o + 4 + len));
      o += 4 + len;
    }
    alice = { ...decodeClient(parts[0]!, 0)![0], clientConfig: defaultClientConfig };
    bob = { ...decodeClient(parts[1]!, 0)![0], clientConfig: defaultClientConfig };
    engine = await decodeGroupState(parts[2]!);
    console.error(`  group loaded from ${groupFile}`);
  } else {
    const creator = kps[0]!;
    alice = await createGroup(new TextEncoder().encode(`bench-${n}`), creator.kp, creator.priv, [], cs);
    const gi0 = encode(groupInfoEncoder)(await createGroupInfoWithExternalPub(alice, [], cs));
    engine = await seedFromGroupInfo(gi0, encodeRatchetTree(alice.ratchetTree));
    const joiners = kps.slice(1, n);
    const big = await createCommit(
      { state: alice, cipherSuite: cs },
      { wireAsPublicMessage: true, extraProposals: joiners.map((j) => ({ proposalType: "add" as const, add: { keyPackage: j.kp } })) },
    );
    alice = big.newState;
    const [tBig, staged] = await time(() => processMessage(engine, encodeMlsMessage(big.commit)));
    engine = await merge(engine, staged);
    console.error(`  engine processed the ${n - 1}-member add commit in ${fmt(tBig)} ms`);
    const tree = decodeRatchetTree(ratchetTreeBytes(engine), 0)![0];
    bob = await joinGroup(big.welcome!, joiners[0]!.kp, joiners[0]!.priv, emptyPskIndex, cs, tree);
    try {
      // ts-mls encodes vectors with one closure per element: big trees need a large stack
      mkdirSync(CACHE, { recursive: true });
      writeFileSync(groupFile, Buffer.concat([lv(encodeClient(alice)), lv(encodeClient(bob)), lv(encodeGroupState(engine))]));
    } catch (e) {
      console.error(`  (group not cached: ${(e as Error).message}; run with --stack-size=7800)`);
    }
  }
  const buildS = (performance.now() - tb) / 1000;
  console.error(`  group ready in ${buildS.toFixed(1)} s`);

  // engine operations take about a millisecond: many runs (after a JIT warm-up) for a stable median
  const iters = n >= 10000 ? 50 : 200;
  const tsIters = n >= 10000 ? 3 : n >= 1000 ? 5 : 15;

  // add-1 commit (no path), by alice; processed by the engine and by bob (ts-mls)
  const add = await createCommit({ state: alice, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: kps[n]!.kp } }] });
  const addBytes = encodeMlsMessage(add.commit);
  const engineAdd = await timeMany(iters, async () => merge(engine, await processMessage(engine, addBytes)), 20);
  const tsAdd = await timeMany(tsIters, () => tsProcess(add.commit as never, bob, emptyPskIndex, acceptAll, cs));

  // path-update commit (empty commit), by alice
  const upd = await createCommit({ state: alice, cipherSuite: cs }, { wireAsPublicMessage: true });
  const updBytes = encodeMlsMessage(upd.commit);
  const st = await processMessage(engine, updBytes);
  const pathCiphertexts = st.kind === "commit" ? (upd.commit as { publicMessage: { content: { commit: { path: { nodes: { encryptedPathSecret: unknown[] }[] } } } } }).publicMessage.content.commit.path.nodes.reduce((a, x) => a + x.encryptedPathSecret.length, 0) : 0;
  const enginePath = await timeMany(iters, async () => merge(engine, await processMessage(engine, updBytes)), 20);
  const tsPath = await timeMany(tsIters, () => tsProcess(upd.commit as never, bob, emptyPskIndex, acceptAll, cs));

  // seeding from GroupInfo + tree (full verification)
  const gi = encode(groupInfoEncoder)(await createGroupInfoWithExternalPub(alice, [], cs));
  const treeBytes = ratchetTreeBytes(engine);
  // seeds alternate with the signature floor, so both see the same machine load
  const jobs = leafSignatureJobs(engine.tree, engine.groupContext.groupId);
  await signatureFloor(jobs);
  await seedFromGroupInfo(gi, treeBytes);
  const seeds: number[] = [];
  const floors: number[] = [];
  for (let i = 0; i < (n >= 10000 ? 5 : 9); i++) {
    floors.push(await signatureFloor(jobs));
    seeds.push((await time(() => seedFromGroupInfo(gi, treeBytes)))[0]);
  }
  const seed = median(seeds);
  const floor = median(floors);
  const snapshot = encodeGroupState(engine);
  const restore = await timeMany(n >= 10000 ? 5 : 9, () => decodeGroupState(snapshot));

  // heap of one parsed group
  bob = undefined as unknown as ClientState;
  const before = heapUsed();
  let held: GroupState | undefined = await seedFromGroupInfo(gi, treeBytes.slice(), { verify: "trusted" });
  const after = heapUsed();
  const heapMB = (after - before) / (1024 * 1024);
  if (held.tree.memberCount !== n) throw new Error("unexpected member count");
  held = undefined;

  return { n, engineAdd, tsAdd, enginePath, tsPath, seed, floor, restore, heapMB, buildS, pathCiphertexts };
}

const cs = await getCiphersuiteImpl(getCiphersuiteFromName(SUITE), nodeCryptoProvider);
if ((globalThis as { gc?: unknown }).gc === undefined) console.error("(run with --expose-gc for exact heap numbers)");
const rows: Row[] = [];
for (const n of sizes) rows.push(await runSize(n, cs));

console.log(`\nPublic group engine vs ts-mls member (${SUITE}), medians in ms`);
console.log("members | add-1: engine  ts-mls  speedup | path-update: engine  ts-mls  speedup (ciphertexts) | seed GroupInfo+tree (sig floor) | snapshot restore | heap MB");
const opt = (x: number, f: (v: number) => string = fmt): string => (Number.isNaN(x) ? "-" : f(x));
for (const r of rows) {
  console.log(
    `${String(r.n).padStart(7)} | ${fmt(r.engineAdd).padStart(13)} ${opt(r.tsAdd).padStart(7)} ${opt(r.tsAdd / r.engineAdd, (v) => `${v.toFixed(0)}x`).padStart(8)} | ${opt(r.enginePath).padStart(19)} ${opt(r.tsPath).padStart(7)} ${opt(r.tsPath / r.enginePath, (v) => `${v.toFixed(0)}x`).padStart(8)} (${r.pathCiphertexts}) | ${`${fmt(r.seed)} (${fmt(r.floor)}, ${(r.seed / r.floor).toFixed(2)}x)`.padStart(31)} | ${fmt(r.restore).padStart(16)} | ${r.heapMB.toFixed(1)}`,
  );
}
