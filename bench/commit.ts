// Add-1 commits to big groups: the server's time for one add_clients request
// (dispatcher -> public group engine -> SQLite apply, synchronous=FULL), in
// process with the real dispatcher and store, and end to end over gRPC/TLS
// against a real `serve` process for reference. Baseline of the same run: a
// ts-mls member (processMessage) processing the same commit.
//
//   node dist/bench/commit.js [--quick] [--sizes=100,1000,100000] [--reps=N]
//
// Each group is built once: create_group, then one commit adding the n-1 other
// members' KeyPackages (made by MimiMembers; cached in bench/.cache/ because
// generating a thousand is slow). Each timed add-1 commit adds a fresh joiner.
//
// Above 10,000 members (100,000 by default in a full run) the group is the
// synthetic one of bench/biggroup.ts: KeyPackages made with ts-mls's code on
// node:crypto, the creator a Committer signing its own commits. It is built
// through the DS (create_group with 25,000 members: a seed with full
// verification, then add_clients commits of 10,000) once and
// cached: the hub's data directory (ds.sqlite, hub-keys.json) and the
// creator's state in bench/.cache/commit-hub-<n>/. Each run copies it and
// measures: opening the hub on it and its first request (a restart: the group
// is loaded from snapshot and log), add-1 commits and send_message (1 KB) in
// process, the hub's memory for the group, and the same restart and commits
// against a real `serve` process on a copy. No ts-mls member at that size
// (it would take minutes per commit).
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acceptAll, emptyPskIndex, processMessage, type KeyPackage } from "ts-mls";
import { buildDSRequest, keyPackageMessage, MimiMember, welcomeMessage, type DSClient } from "../src/client/index.js";
import { decodeDSResponse, decodeMLSMessage, encodeDSRequest } from "../src/wire/index.js";
import { decodeGroupState, encodeGroupState } from "../src/mls/state.js";
import { BigMember, bigMembers, Committer, SPARE_MEMBERS } from "./biggroup.js";
import { startInProcessHub, type InProcessHub } from "./inproc.js";
import { benchMember, buildGroup, connect, devCerts, fmt, hubSender, log, median, quantile, repoRoot, startServe } from "./lib.js";

export interface CommitOptions {
  readonly quick?: boolean;
  readonly sizes?: readonly number[];
  readonly reps?: number;
}

export interface CommitSizeResult {
  readonly members: number;
  /** Synthetic (bench/biggroup.ts) groups only. */
  readonly huge?: HugeResult;
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

export interface HugeResult {
  /** Building the group through the DS (create_group of 25,000, add_clients of 10,000), s; undefined when it came from the cache. */
  readonly buildThroughDsS?: number;
  /** In process: opening the store and the DS on the copied data directory, ms. */
  readonly openMs: number;
  /** In process: the first request after the restart (an add-1 commit; loads the group), ms. */
  readonly firstRequestMs: number;
  /** send_message (1 KB) in process, ms. */
  readonly sendMs: number[];
  readonly sendMedian: number;
  /** JS heap + ArrayBuffers the hub holds for the group after loading it (in process, after GC), MB. */
  readonly hubHeapMB: number;
  /** Over gRPC against a restarted serve process: the first request (an add-1 commit), ms. */
  readonly grpcFirstRequestMs: number;
  /** Resident set of that serve process after the timed commits, MB. */
  readonly serveRssMB: number;
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
  if (n > 10_000) return runHuge(n, reps);
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

// ---------------------------------------------------------------- synthetic groups above 10,000 members

const ADD_CHUNK = 10_000;
const CREATE_MEMBERS = 25_000;
/** Bumped when the cached group is built differently. */
const CACHE_LAYOUT = 3;

function heapUsed(): number {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g !== undefined) {
    g();
    g();
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function rssOf(pid: number): number {
  try {
    const m = /^VmRSS:\s*(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

async function handleOk(h: InProcessHub, bytes: Uint8Array): Promise<number> {
  const t = performance.now();
  const r = await h.ds.handler.handle(bytes, {});
  const ms = performance.now() - t;
  if (r.error !== undefined) throw new Error(`request refused: ${r.error.message}`);
  return ms;
}

interface HugeCache {
  readonly dir: string;
  readonly groupId: Uint8Array;
  /** Members used by the group (0 .. used-1); the rest are fresh joiners. */
  readonly used: number;
  readonly buildS?: number;
}

/** The hub's data directory with the n-member group and the creator's state, built through the DS once. */
async function hugeGroup(n: number, people: readonly BigMember[]): Promise<HugeCache> {
  const dir = join(CACHE, `commit-hub-${n}`);
  const metaFile = join(dir, "meta.json");
  if (existsSync(metaFile)) {
    const meta = JSON.parse(readFileSync(metaFile, "utf8")) as { groupId: string; used: number; layout?: number };
    // Caches of an earlier build procedure are rebuilt.
    if (meta.layout === CACHE_LAYOUT) return { dir, groupId: new Uint8Array(Buffer.from(meta.groupId, "base64")), used: meta.used };
  }
  log(`commit: building the ${n}-member group through the DS (cached in ${dir})`);
  const t = performance.now();
  const work = mkdtempSync(join(tmpdir(), "mimi-bench-huge-"));
  // A snapshot with every commit of the build: the stored group is one snapshot, as a long-lived
  // group's would be plus a few small commits (a restart replays the log since the snapshot, and
  // five commits of 10,000 Adds are not what a log holds).
  const h = await startInProcessHub(DOMAIN, { dir: work, config: { snapshotInterval: 1 } });
  try {
    const groupId = await h.hub.requestGroupId();
    const creator = await Committer.create(people[0]!, groupId);
    // create_group with as many members as one handshake message may carry under the DS's
    // default limit (8 MiB, --max-handshake-bytes; a leaf is about 260 bytes), the rest in
    // add_clients commits of 10,000.
    const first = Math.min(n, CREATE_MEMBERS);
    const seeded = await creator.seed(people.slice(0, first), MimiMember.groupExtensions(await hubSender(h.hub)));
    const createMs = await handleOk(
      h,
      encodeDSRequest(
        await buildDSRequest(
          { requestType: "create_group", createGroupRequest: { groupInfo: creator.groupInfoMessage(seeded.groupInfo), ratchetTree: seeded.ratchetTree, creatorToken: { token: randomBytes(16) } } },
          creator.auth,
        ),
      ),
    );
    log(`  create_group with ${first} members: hub ${fmt(createMs)} ms`);
    for (let k = first; k < n; k += ADD_CHUNK) {
      const chunk = people.slice(k, Math.min(n, k + ADD_CHUNK)).map((m) => m.keyPackage);
      const tc = performance.now();
      const req = await creator.addRequest(chunk);
      const ms = await handleOk(h, req.bytes);
      await creator.accept(req.staged);
      log(`  add_clients of ${chunk.length}: hub ${fmt(ms)} ms (${((performance.now() - tc) / 1000).toFixed(0)} s with the creator's part)`);
    }
    await h.close();
    writeFileSync(join(work, "creator.bin"), encodeGroupState(creator.state!));
    mkdirSync(CACHE, { recursive: true });
    rmSync(dir, { recursive: true, force: true });
    cpSync(work, dir, { recursive: true });
    writeFileSync(metaFile, JSON.stringify({ groupId: Buffer.from(groupId).toString("base64"), used: n, layout: CACHE_LAYOUT }));
    return { dir, groupId, used: n, buildS: (performance.now() - t) / 1000 };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** A copy of the cached data directory (each run changes it). */
function copyOf(cache: HugeCache): string {
  const d = mkdtempSync(join(tmpdir(), "mimi-bench-huge-run-"));
  cpSync(cache.dir, d, { recursive: true });
  return d;
}

async function runHuge(n: number, reps: number): Promise<CommitSizeResult> {
  const tb = performance.now();
  if (2 * (reps + 1) > SPARE_MEMBERS) throw new Error(`--reps: at most ${SPARE_MEMBERS / 2 - 1} at ${n} members`);
  const people = await bigMembers(n + SPARE_MEMBERS, DOMAIN);
  const cache = await hugeGroup(n, people);
  const fresh = people.slice(cache.used);
  const buildS = (performance.now() - tb) / 1000;
  const loadCreator = async (dir: string): Promise<Committer> => {
    const c = await Committer.create(people[0]!, cache.groupId);
    c.state = await decodeGroupState(new Uint8Array(readFileSync(join(dir, "creator.bin"))), { verify: "trusted" });
    return c;
  };

  // ---- in process: a restart on the copied directory, then add-1 commits and send_message
  const dir = copyOf(cache);
  const serverMs: number[] = [];
  const applyMs: number[] = [];
  const sendMs: number[] = [];
  let commitBytes = 0;
  let openMs: number;
  let firstRequestMs: number;
  let hubHeapMB: number;
  try {
    const creator = await loadCreator(dir);
    const heap0 = heapUsed();
    const to = performance.now();
    const h = await startInProcessHub(DOMAIN, { dir });
    openMs = performance.now() - to;
    try {
      const first = await creator.addRequest([fresh[0]!.keyPackage]);
      firstRequestMs = await handleOk(h, first.bytes);
      await creator.accept(first.staged);
      hubHeapMB = (heapUsed() - heap0) / (1024 * 1024);
      log(`commit: ${n} members: opened in ${fmt(openMs)} ms, first request (loads the group) ${fmt(firstRequestMs)} ms, hub heap for the group ${fmt(hubHeapMB)} MB`);
      for (let i = 1; i <= reps; i++) {
        const req = await creator.addRequest([fresh[i]!.keyPackage]);
        commitBytes = req.bytes.length;
        h.resetApplyMs();
        serverMs.push(await handleOk(h, req.bytes));
        applyMs.push(h.applyMs());
        await creator.accept(req.staged);
        sendMs.push(await handleOk(h, await creator.sendRequest()));
      }
    } finally {
      await h.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // ---- over gRPC: a serve process started on another copy (a restart), its first request and add-1 commits
  const gdir = mkdtempSync(join(tmpdir(), "mimi-bench-huge-grpc-"));
  const grpcMs: number[] = [];
  let grpcFirstRequestMs = Number.NaN;
  let serveRssMB = Number.NaN;
  try {
    const dataDir = join(gdir, "data");
    cpSync(cache.dir, dataDir, { recursive: true });
    const certsDir = join(gdir, "certs");
    const { ca } = devCerts(certsDir, DOMAIN);
    const creator = await loadCreator(dataDir);
    // The cached directory was made by an in-process hub, which keeps no fanout token key
    // file: serve makes one (the group's tokens are the bench's random ones anyway).
    const server = await startServe({ domain: DOMAIN, dataDir, certsDir, logLevel: "warn", args: ["--allow-new-keys"] });
    const { transport, hub } = connect(server.url, ca);
    try {
      for (let i = 0; i <= reps; i++) {
        const req = await creator.addRequest([fresh[reps + 1 + i]!.keyPackage]);
        const t = performance.now();
        const r = decodeDSResponse(await hub.submit(req.bytes)).responseBody;
        const ms = performance.now() - t;
        if (r.responseType !== "ok") throw new Error(`add_clients over gRPC answered ${r.responseType}`);
        await creator.accept(req.staged);
        if (i === 0) grpcFirstRequestMs = ms;
        else grpcMs.push(ms);
      }
      serveRssMB = rssOf(server.child.pid!) / (1024 * 1024);
    } finally {
      transport.close();
      await server.stop();
    }
  } finally {
    rmSync(gdir, { recursive: true, force: true });
  }
  const serverMedian = median(serverMs);
  log(`  ${n} members: add-1 server ${fmt(serverMedian)} ms (store.apply ${fmt(median(applyMs))} ms), send_message ${fmt(median(sendMs))} ms, gRPC ${fmt(median(grpcMs))} ms (first after restart ${fmt(grpcFirstRequestMs)} ms, serve RSS ${fmt(serveRssMB)} MB)`);
  return {
    members: n,
    huge: {
      ...(cache.buildS !== undefined ? { buildThroughDsS: cache.buildS } : {}),
      openMs,
      firstRequestMs,
      sendMs,
      sendMedian: median(sendMs),
      hubHeapMB,
      grpcFirstRequestMs,
      serveRssMB,
    },
    serverMs,
    serverMedian,
    serverP99: quantile(serverMs, 0.99),
    storeApplyMedian: median(applyMs),
    grpcMs,
    grpcMedian: median(grpcMs),
    tsMlsMs: [],
    tsMlsMedian: Number.NaN,
    speedupVsTsMls: Number.NaN,
    commitBytes,
    buildS,
  };
}

export async function runCommitBench(o: CommitOptions = {}): Promise<CommitResult> {
  const quick = o.quick === true;
  const reps = o.reps ?? (quick ? 5 : 15);
  const sizes = o.sizes ?? (quick ? [100, 1000] : [100, 1000, 100_000]);
  const out: CommitSizeResult[] = [];
  for (const n of sizes) out.push(await runSize(n, reps));
  return { reps, sizes: out };
}

export function commitTable(r: CommitResult): string {
  const lines = [
    `Add-1 commit (add_clients, one fresh joiner), ${r.reps} commits each; medians in ms`,
    "members | server (in process, target <= 10) | p99 | of which store.apply | over gRPC | ts-mls member | member / server",
  ];
  const opt = (x: number, f: (v: number) => string = (v) => fmt(v)): string => (Number.isNaN(x) ? "-" : f(x));
  for (const s of r.sizes) {
    lines.push(
      `${String(s.members).padStart(7)} | ${fmt(s.serverMedian).padStart(33)} | ${fmt(s.serverP99).padStart(3)} | ${fmt(s.storeApplyMedian).padStart(20)} | ${fmt(s.grpcMedian).padStart(9)} | ${opt(s.tsMlsMedian).padStart(13)} | ${opt(s.speedupVsTsMls, (v) => `${v.toFixed(1)}x`).padStart(15)}`,
    );
  }
  const huge = r.sizes.filter((s) => s.huge !== undefined);
  if (huge.length > 0) {
    lines.push(
      "",
      "Synthetic groups (bench/biggroup.ts): restart on the stored group, send_message, memory (targets at 100,000: add-1 server <= 5 ms, heap <= 250 MB, first request after a restart <= 2 s)",
      "members | open store + DS ms | first request (loads the group) ms | send_message ms | hub heap for the group MB | gRPC: first request after restart ms | serve RSS MB | built through the DS s",
    );
    for (const s of huge) {
      const u = s.huge!;
      lines.push(
        `${String(s.members).padStart(7)} | ${fmt(u.openMs).padStart(18)} | ${fmt(u.firstRequestMs).padStart(34)} | ${fmt(u.sendMedian).padStart(15)} | ${fmt(u.hubHeapMB).padStart(25)} | ${fmt(u.grpcFirstRequestMs).padStart(37)} | ${fmt(u.serveRssMB).padStart(12)} | ${u.buildThroughDsS !== undefined ? fmt(u.buildThroughDsS) : "cached"}`,
      );
    }
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
