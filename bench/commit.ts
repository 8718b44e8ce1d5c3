// Add-1 commits to big groups: the server's time for one add_clients request
// (dispatcher -> public group engine -> SQLite apply, synchronous=FULL), in
// process with the real dispatcher and store, and end to end over gRPC/TLS
// against a real `serve` process for reference. Baseline of the same run: a
// ts-mls member (processMessage) processing the same commit.
//
//   node dist/bench/commit.js [--quick] [--sizes=100,1000] [--reps=N]
//
// Each group is built once: create_group, then one commit adding the n-1 other
// members' KeyPackages (made by MimiMembers; cached in bench/.cache/ because
// generating a thousand is slow). Each timed add-1 commit adds a fresh joiner.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acceptAll, emptyPskIndex, processMessage, type KeyPackage } from "ts-mls";
import { buildDSRequest, keyPackageMessage, MimiMember, welcomeMessage, type DSClient } from "../src/client/index.js";
import { decodeMLSMessage, encodeDSRequest } from "../src/wire/index.js";
import { startInProcessHub } from "./inproc.js";
import { benchMember, buildGroup, connect, devCerts, fmt, log, median, quantile, repoRoot, startServe } from "./lib.js";

export interface CommitOptions {
  readonly quick?: boolean;
  readonly sizes?: readonly number[];
  readonly reps?: number;
}

export interface CommitSizeResult {
  readonly members: number;
  /** In-process handler time of each add-1 commit, ms. */
  readonly serverMs: number[];
  readonly serverMedian: number;
  readonly serverP99: number;
  /** Part of the server time spent in store.apply (the write with its fanout, and the fsync). */
  readonly storeApplyMedian: number;
  /** End to end over gRPC (client prepares before the clock starts), ms. */
  readonly grpcMs: number[];
  readonly grpcMedian: number;
  /** ts-mls member processing the same commits, ms. */
  readonly tsMlsMs: number[];
  readonly tsMlsMedian: number;
  /** tsMlsMedian / serverMedian. */
  readonly speedupVsTsMls: number;
  readonly commitBytes: number;
  readonly buildS: number;
}

export interface CommitResult {
  readonly reps: number;
  readonly sizes: CommitSizeResult[];
}

const DOMAIN = "bench.example";
const CACHE = join(repoRoot, "bench", ".cache");

/** KeyPackages of `count` distinct members (FanoutAuth token included), cached as MLSMessages. */
async function cachedKeyPackages(wanted: number, hub: DSClient): Promise<KeyPackage[]> {
  // Rounded up, so quick and full runs (different repetition counts) share one file.
  const count = Math.ceil(wanted / 100) * 100;
  const file = join(CACHE, `commit-kps-${DOMAIN}-${count}.bin`);
  if (existsSync(file)) {
    const b = readFileSync(file);
    const out: KeyPackage[] = [];
    for (let o = 0; o < b.length; ) {
      const len = b.readUInt32BE(o);
      const m = decodeMLSMessage(new Uint8Array(b.subarray(o + 4, o + 4 + len)));
      if (m.wireformat === "mls_key_package") out.push(m.keyPackage);
      o += 4 + len;
    }
    if (out.length === count) return out.slice(0, wanted);
  }
  const t = performance.now();
  const out: KeyPackage[] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const m = await benchMember(DOMAIN, `k${count}-${i}`, hub);
    const kp = (await m.generateKeyPackage()).publicPackage;
    out.push(kp);
    const bytes = keyPackageMessage(kp);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    parts.push(len, Buffer.from(bytes));
    if (i > 0 && i % 250 === 0) log(`  generated ${i}/${count} KeyPackages (${((performance.now() - t) / 1000).toFixed(0)} s)`);
  }
  mkdirSync(CACHE, { recursive: true });
  writeFileSync(file, Buffer.concat(parts));
  return out.slice(0, wanted);
}

async function addRequest(creator: MimiMember, kp: KeyPackage) {
  const p = await creator.prepareAdd([kp]);
  const body = { requestType: "add_clients" as const, addClientsRequest: { groupUpdate: p.groupUpdate, welcomeMessages: [welcomeMessage(p.welcome)] } };
  const auth = {
    kind: "member" as const,
    senderIndex: creator.leafIndex,
    signaturePrivateKey: creator.signatureKeyPair.signKey,
    signature: creator.cs.signature,
  };
  return { p, body, auth, bytes: encodeDSRequest(await buildDSRequest(body, auth)) };
}

async function runSize(n: number, reps: number): Promise<CommitSizeResult> {
  const tb = performance.now();
  // ---- in process: the real dispatcher + SQLite store, timed at the handler
  const h = await startInProcessHub(DOMAIN);
  const serverMs: number[] = [];
  const applyMs: number[] = [];
  const tsMlsMs: number[] = [];
  let commitBytes = 0;
  let pool: KeyPackage[];
  try {
    pool = await cachedKeyPackages(n - 2 + 2 * (reps + 1), h.hub);
    const members = pool.slice(0, n - 2);
    const fresh = pool.slice(n - 2);
    // bob: a real ts-mls member of the group, the baseline.
    const bob = await benchMember(DOMAIN, "bob", h.hub);
    const bobKp = (await bob.generateKeyPackage()).publicPackage;
    log(`commit: building a ${n}-member group in process`);
    const g = await buildGroup(h.hub, DOMAIN, n, [...members, bobKp]);
    await bob.joinWithTree(g.welcome!, g.creator.ratchetTree);
    const buildS = (performance.now() - tb) / 1000;
    log(`  built in ${buildS.toFixed(1)} s; ${reps} add-1 commits`);
    for (let i = 0; i < reps + 1; i++) {
      const { p, bytes } = await addRequest(g.creator, fresh[i]!);
      h.resetApplyMs();
      const t = performance.now();
      const r = await h.ds.handler.handle(bytes, {});
      const ms = performance.now() - t;
      const storeMs = h.applyMs();
      if (r.error !== undefined) throw new Error(`add_clients refused: ${r.error.message}`);
      g.creator.state = p.newState;
      const commit = p.groupUpdate.commit;
      if (commit.wireformat !== "mls_public_message") throw new Error("expected a PublicMessage commit");
      commitBytes = bytes.length;
      const tb2 = performance.now();
      const res = await processMessage(commit, bob.state!, emptyPskIndex, acceptAll, bob.cs);
      const tsMs = performance.now() - tb2;
      if (res.kind !== "newState") throw new Error("ts-mls did not advance");
      bob.state = res.newState;
      if (i === 0) continue; // warm-up
      serverMs.push(ms);
      applyMs.push(storeMs);
      tsMlsMs.push(tsMs);
    }
    // ---- over gRPC: a real serve process (same KeyPackages, another hub)
    const grpcMs = await overGrpc(n, reps, members, fresh.slice(reps + 1));
    const serverMedian = median(serverMs);
    const tsMlsMedian = median(tsMlsMs);
    log(`  ${n} members: server ${fmt(serverMedian)} ms (store.apply ${fmt(median(applyMs))} ms), gRPC ${fmt(median(grpcMs))} ms, ts-mls member ${fmt(tsMlsMedian)} ms`);
    return {
      members: n,
      serverMs,
      serverMedian,
      serverP99: quantile(serverMs, 0.99),
      storeApplyMedian: median(applyMs),
      grpcMs,
      grpcMedian: median(grpcMs),
      tsMlsMs,
      tsMlsMedian,
      speedupVsTsMls: tsMlsMedian / serverMedian,
      commitBytes,
      buildS,
    };
  } finally {
    await h.close();
  }
}

async function overGrpc(n: number, reps: number, members: readonly KeyPackage[], fresh: readonly KeyPackage[]): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "mimi-bench-commit-"));
  const certsDir = join(dir, "certs");
  const { ca } = devCerts(certsDir, DOMAIN);
  const server = await startServe({ domain: DOMAIN, dataDir: join(dir, "data"), certsDir, logLevel: "warn" });
  const { transport, hub } = connect(server.url, ca);
  try {
    log(`  building the ${n}-member group over gRPC`);
    const extra = (await (await benchMember(DOMAIN, "bob", hub)).generateKeyPackage()).publicPackage;
    const g = await buildGroup(hub, DOMAIN, n, [...members, extra]);
    const out: number[] = [];
    for (let i = 0; i < reps + 1; i++) {
      const { p, body, auth } = await addRequest(g.creator, fresh[i]!);
      const t = performance.now();
      await hub.addClients(body.addClientsRequest, auth);
      const ms = performance.now() - t;
      g.creator.state = p.newState;
      if (i > 0) out.push(ms);
    }
    return out;
  } finally {
    transport.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runCommitBench(o: CommitOptions = {}): Promise<CommitResult> {
  const quick = o.quick === true;
  const reps = o.reps ?? (quick ? 5 : 15);
  const sizes = o.sizes ?? [100, 1000];
  const out: CommitSizeResult[] = [];
  for (const n of sizes) out.push(await runSize(n, reps));
  return { reps, sizes: out };
}

export function commitTable(r: CommitResult): string {
  const lines = [
    `Add-1 commit (add_clients, one fresh joiner), ${r.reps} commits each; medians in ms`,
    "members | server (in process, target <= 10) | p99 | of which store.apply | over gRPC | ts-mls member | member / server",
  ];
  for (const s of r.sizes) {
    lines.push(
      `${String(s.members).padStart(7)} | ${fmt(s.serverMedian).padStart(33)} | ${fmt(s.serverP99).padStart(3)} | ${fmt(s.storeApplyMedian).padStart(20)} | ${fmt(s.grpcMedian).padStart(9)} | ${fmt(s.tsMlsMedian).padStart(13)} | ${s.speedupVsTsMls.toFixed(1).padStart(14)}x`,
    );
  }
  return lines.join("\n");
}

export function parseCommitArgs(args: readonly string[]): CommitOptions {
  const val = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const o: { -readonly [K in keyof CommitOptions]: CommitOptions[K] } = { quick: args.includes("--quick") };
  if (val("sizes") !== undefined) o.sizes = val("sizes")!.split(",").map(Number);
  if (val("reps") !== undefined) o.reps = Number(val("reps"));
  return o;
}

if (process.argv[1] !== undefined && /bench[/\\]commit\.[jt]s$/.test(process.argv[1])) {
  const r = await runCommitBench(parseCommitArgs(process.argv.slice(2)));
  console.log(commitTable(r));
}
