// Federation: one application message to a big group spread over several
// domains. Real `serve` processes, one per domain (a.bench is the hub), on
// loopback with one development CA, peers configured, mutual TLS, SQLite
// stores with synchronous=FULL in temp dirs.
//
//   node dist/bench/federation.js [--quick] [--configs=1000x3,100x3,1000x2,67x2]
//        [--reps=N] [--messages=M] [--sequential=K] [--concurrency=W] [--samples=S]
//        [--fed-log-level=warn] [--fed-server-node-args="--cpu-prof --cpu-prof-dir=DIR"]
//
// Defaults: configurations 1000x3, 100x3, 1000x2, 67x2 (quick: the first
// three), 3 repetitions (quick 2) of M = 200 (100) pipelined messages with
// W = 16 in flight, M Pings, and K = 30 (20) messages one at a time.
//
// Per configuration (members x domains), members spread evenly over the
// domains, each registered with its own DS and its KeyPackage published there;
// the creator (on the hub) adds everyone in a few big add_clients commits (the
// hub fetches the guests' KeyPackages from their DSs). One receiver per domain
// keeps a Receive stream open at its own DS. Per repetition:
//
//   - pipelined: the creator sends M distinct 1 KB application messages
//     (send_message), W in flight; messages/s end to end = M / (time until
//     the receiver of every domain has all M);
//   - Ping: the same hub answers M HubService/Ping with W in flight (baseline);
//   - one at a time: K messages, each sent when the previous one reached every
//     receiver (latency to each domain).
//
// Around each phase the CPU time (utime + stime from /proc/<pid>/stat) of
// every server process, the bytes it wrote to storage (/proc/<pid>/io
// write_bytes) and the net number of rows in its SQLite file (all tables,
// counted by name) are read: per message and per Ping. Nothing depends on the
// DS's internals: public RPCs, /proc, and row counts of whatever tables exist;
// the guests' per-member queues are read through the Store port (queueInfo).
//
// Delivery checks (every repetition; any failure aborts the bench):
//   - every receiver got every message of the repetition exactly once, the
//     receivers of all domains in the same order, and the one-at-a-time
//     messages in the order sent;
//   - `samples` further members per domain (the hub's own domain included)
//     read their queue through ClientService/Receive afterwards: every message
//     exactly once, in the receivers' order;
//   - every member of every guest domain: its queue at its own DS got exactly
//     M + K appends (Store.queueInfo lastSeq).
// Then every member acknowledges its queue (ClientService/AcknowledgeMessages),
// as an online client would, so the stores do not grow over the repetitions.
import { mkdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { buildDSRequest, createDSTransport, DSClient, MimiMember, type DSTransport } from "../src/client/index.js";
import { HubIdentity } from "../src/ds/hub-identity.js";
import { clientQueue, openStore, type Store } from "../src/store/index.js";
import { decodeDSResponse, encodeDSRequest, encodeMLSMessage } from "../src/wire/index.js";
import { devCerts, fmt, freePort, hubSender, log, median, quantile, sleep, startServe, type ServeProcess } from "./lib.js";

export interface FedConfig {
  readonly members: number;
  readonly domains: number;
}

export interface FederationOptions {
  readonly quick?: boolean;
  readonly configs?: readonly FedConfig[];
  readonly reps?: number;
  /** Pipelined messages (and Pings) per repetition. */
  readonly messages?: number;
  /** One-at-a-time messages per repetition. */
  readonly sequential?: number;
  /** Requests in flight in the pipelined and Ping phases. */
  readonly concurrency?: number;
  /** Members per domain whose queues are read back through Receive after each repetition. */
  readonly samples?: number;
  /** The servers' --log-level (default warn: no line per RPC). */
  readonly logLevel?: string;
  /** Extra node flags for the server processes (e.g. --cpu-prof --cpu-prof-dir=DIR). */
  readonly serverNodeArgs?: readonly string[];
}

/** Per server process, over one phase. */
export interface ProcessDelta {
  readonly domain: string;
  /** utime + stime, ms. */
  readonly cpuMs: number;
  /** Bytes the process caused to be written to storage (/proc/<pid>/io write_bytes). */
  readonly writeBytes: number;
  /** Net change of the row count of each table of the domain's SQLite file. */
  readonly rows: Record<string, number>;
}

export interface PhaseResult {
  readonly count: number;
  readonly elapsedMs: number;
  readonly processes: ProcessDelta[];
  /** CPU time of the load generator (this process: sender, receivers), ms. */
  readonly benchCpuMs: number;
}

export interface PipelinedResult extends PhaseResult {
  /** Until every send_message was answered. */
  readonly acceptedMs: number;
  /** Per domain: until its receiver had every message. */
  readonly domainDoneMs: Record<string, number>;
}

export interface SequentialResult extends PhaseResult {
  /** send_message round trips, ms. */
  readonly submitMs: number[];
  /** Per domain: from the send to the receiver's arrival, ms. */
  readonly latencyMs: Record<string, number[]>;
  /** Per message: until the last domain's receiver had it, ms. */
  readonly lastDomainMs: number[];
}

export interface FedRep {
  readonly pipelined: PipelinedResult;
  readonly ping: PhaseResult;
  readonly sequential: SequentialResult;
}

export interface FedSummary {
  readonly e2eMsgsPerS: number;
  readonly acceptedMsgsPerS: number;
  readonly hubCpuMsPerMsg: number;
  readonly hubCpuMsPerPing: number;
  readonly hubCpuMsPerMsgSequential: number;
  readonly guestCpuMsPerMsg: number[];
  readonly hubRowsPerMsg: number;
  readonly guestRowsPerMsg: number[];
  readonly hubWriteKBPerMsg: number;
  readonly guestWriteKBPerMsg: number[];
  /** The load generator (sender and receivers, this process). */
  readonly benchCpuMsPerMsg: number;
  /** Every server process and the load generator: what the 2 cores had to do per message. */
  readonly allCpuMsPerMsg: number;
  readonly pingsPerS: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly submitP50Ms: number;
}

export interface FedConfigResult {
  readonly members: number;
  readonly domains: string[];
  /** Members per domain (the hub's includes the sender). */
  readonly membersPerDomain: number[];
  readonly addCommits: number;
  readonly buildS: number;
  readonly messageBytes: number;
  readonly reps: FedRep[];
  /** Medians over the repetitions. */
  readonly summary: FedSummary;
  readonly checks: string[];
}

export interface FederationResult {
  readonly reps: number;
  readonly messages: number;
  readonly sequential: number;
  readonly concurrency: number;
  readonly samples: number;
  readonly logLevel: string;
  readonly clockTicksPerS: number;
  readonly configs: FedConfigResult[];
  /**
   * Least-squares fit over the configurations (when there are at least 4):
   * hub CPU ms/msg = baseMs + perGuestDomainMs x (domains - 1) + perLocalRecipientMs x (hub-local members - 1).
   */
  readonly model?: HubCpuModel;
}

export interface HubCpuModel {
  readonly baseMs: number;
  readonly perGuestDomainMs: number;
  readonly perLocalRecipientMs: number;
  /** Largest |fitted - measured| over the configurations, ms. */
  readonly maxResidualMs: number;
}

/** Fit of the configurations' hub CPU per message on (guest domains, hub-local recipients). */
function fitHubCpu(configs: readonly FedConfigResult[]): HubCpuModel | undefined {
  const pts = configs.map((c) => ({ x: [1, c.domains.length - 1, c.membersPerDomain[0]! - 1], y: c.summary.hubCpuMsPerMsg }));
  if (pts.length < 4) return undefined; // 3 points would be solved exactly, noise included
  // Normal equations A^T A b = A^T y, solved by Gaussian elimination with partial pivoting.
  const m = [0, 1, 2].map((i) => [...[0, 1, 2].map((j) => pts.reduce((a, p) => a + p.x[i]! * p.x[j]!, 0)), pts.reduce((a, p) => a + p.x[i]! * p.y, 0)]);
  for (let col = 0; col < 3; col++) {
    let piv = col;
    for (let r = col + 1; r < 3; r++) if (Math.abs(m[r]![col]!) > Math.abs(m[piv]![col]!)) piv = r;
    if (Math.abs(m[piv]![col]!) < 1e-9) return undefined;
    [m[col], m[piv]] = [m[piv]!, m[col]!];
    for (let r = 0; r < 3; r++) {
      if (r === col) continue;
      const f = m[r]![col]! / m[col]![col]!;
      for (let k = col; k < 4; k++) m[r]![k]! -= f * m[col]![k]!;
    }
  }
  const b = [0, 1, 2].map((i) => m[i]![3]! / m[i]![i]!);
  const maxResidualMs = Math.max(...pts.map((p) => Math.abs(b[0]! + b[1]! * p.x[1]! + b[2]! * p.x[2]! - p.y)));
  if (b.some((v) => !Number.isFinite(v))) return undefined;
  return { baseMs: b[0]!, perGuestDomainMs: b[1]!, perLocalRecipientMs: b[2]!, maxResidualMs };
}

const MESSAGE_BYTES = 1024;
/** Largest add_clients commit while building (KeyPackages per commit). */
const ADD_BATCH = 340;
const DOMAIN_NAMES = ["a.bench", "b.bench", "c.bench", "d.bench", "e.bench"];
const SETTLE_MS = 300;
/**
 * (a) 1,000 members over 3 domains, (b) 100 over 3, (c) 1,000 over 2, and (d) 67 over 2: the
 * same 34 members on the hub as (b) (34/33), so (b) - (d) is the cost of one more guest domain
 * alone, as (a) - (b) is that of 300 more members on each domain.
 */
const DEFAULT_CONFIGS = "1000x3,100x3,1000x2,67x2";
const QUICK_CONFIGS = "1000x3,100x3,1000x2";
const WAIT_MS = 180_000;

// ---------------------------------------------------------------- process statistics (Linux /proc)

const CLK_TCK = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && n > 0 ? n : 100;
})();

/** utime + stime of a process (all its threads), ms; NaN where /proc is missing. */
function cpuMsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after "(comm)": state is field 3, utime field 14, stime field 15.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

function writeBytesOf(pid: number): number {
  try {
    const m = /^write_bytes:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Rows of every table of a SQLite file, by table name (a read-only connection; the server keeps writing). */
function tableRows(file: string): Record<string, number> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.pragma("busy_timeout = 10000");
    const names = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[];
    const out: Record<string, number> = {};
    db.transaction(() => {
      for (const n of names) out[n] = Number(db.prepare(`SELECT count(*) FROM "${n.replace(/"/g, '""')}"`).pluck().get());
    })();
    return out;
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------- the federation

interface Node {
  readonly domain: string;
  readonly dataDir: string;
  readonly sqlite: string;
  server: ServeProcess;
  /** bench -> this DS: member registration, KeyPackages, Receive, Acknowledge. */
  transport: DSTransport;
  /** The DS's store, opened through the Store port for queue counts (guests). */
  store: Store;
}

interface Snapshot {
  readonly t: number;
  readonly cpu: number[];
  readonly io: number[];
  readonly benchCpu: number;
}

class Fed {
  private constructor(
    readonly root: string,
    readonly ca: Buffer,
    readonly nodes: Node[],
  ) {}

  static async start(domains: readonly string[], logLevel: string, nodeArgs: readonly string[]): Promise<Fed> {
    const root = mkdtempSync(join(tmpdir(), "mimi-bench-fed-"));
    const certsDir = join(root, "certs");
    const { ca, caPath } = devCerts(certsDir, domains);
    const specs: { domain: string; dataDir: string; port: number; key: Uint8Array }[] = [];
    for (const domain of domains) {
      const dataDir = join(root, domain);
      mkdirSync(dataDir, { recursive: true });
      // The hub key file is made ahead so that every peer can be told its fanout key (as the e2e harness does).
      const key = (await HubIdentity.open(domain, join(dataDir, "hub-keys.json"))).fanoutPublicKey;
      specs.push({ domain, dataDir, port: await freePort(), key });
    }
    const nodes: Node[] = [];
    const fed = new Fed(root, ca, nodes);
    try {
      for (const s of specs) {
        const peers = specs
          .filter((p) => p.domain !== s.domain)
          .map((p) => ({ domain: p.domain, endpoint: `https://localhost:${p.port}`, ca: caPath, dsSignatureKey: Buffer.from(p.key).toString("base64") }));
        const peersFile = join(root, `${s.domain}.peers.json`);
        writeFileSync(peersFile, JSON.stringify(peers, null, 2));
        const server = await startServe({ domain: s.domain, dataDir: s.dataDir, certsDir, logLevel, nodeArgs, port: s.port, args: ["--peers", peersFile] });
        const transport = createDSTransport({ baseUrl: server.url, ca });
        const sqlite = join(s.dataDir, "ds.sqlite");
        nodes.push({ domain: s.domain, dataDir: s.dataDir, sqlite, server, transport, store: await openStore(sqlite) });
      }
    } catch (err) {
      await fed.close();
      throw err;
    }
    return fed;
  }

  get hub(): Node {
    return this.nodes[0]!;
  }

  snapshot(): Snapshot {
    return {
      t: performance.now(),
      cpu: this.nodes.map((n) => cpuMsOf(n.server.child.pid!)),
      io: this.nodes.map((n) => writeBytesOf(n.server.child.pid!)),
      benchCpu: cpuUsageMs(),
    };
  }

  rows(): Record<string, number>[] {
    return this.nodes.map((n) => tableRows(n.sqlite));
  }

  deltas(a: Snapshot, b: Snapshot, rowsA?: Record<string, number>[], rowsB?: Record<string, number>[]): ProcessDelta[] {
    return this.nodes.map((n, i) => {
      const rows: Record<string, number> = {};
      if (rowsA !== undefined && rowsB !== undefined) {
        for (const k of new Set([...Object.keys(rowsA[i]!), ...Object.keys(rowsB[i]!)])) {
          const d = (rowsB[i]![k] ?? 0) - (rowsA[i]![k] ?? 0);
          if (d !== 0) rows[k] = d;
        }
      }
      return { domain: n.domain, cpuMs: b.cpu[i]! - a.cpu[i]!, writeBytes: b.io[i]! - a.io[i]!, rows };
    });
  }

  async close(): Promise<void> {
    for (const n of this.nodes) {
      n.transport.close();
      await n.store.close();
      await n.server.stop();
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}

function cpuUsageMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

// ---------------------------------------------------------------- messages and receivers

/** MLSMessage: version (uint16) then wire_format (uint16); 2 = mls_private_message. */
const isPrivateMessage = (b: Uint8Array): boolean => b.length >= 4 && b[2] === 0 && b[3] === 2;

/** The messages of one repetition and who received which, when. */
class RunTracker {
  private readonly byKey = new Map<string, number>();
  /** Per receiver slot. */
  readonly counts: Uint8Array[];
  readonly order: number[][];
  readonly arrivals: Float64Array[];
  readonly distinct: number[];
  readonly doneAt: number[];
  /** How many receivers have message i. */
  private readonly reached: Uint8Array;
  private waiters: { check: () => boolean; resolve: () => void }[] = [];
  doneTarget = 0;

  constructor(
    readonly messages: readonly Uint8Array[],
    readonly slots: number,
  ) {
    messages.forEach((m, i) => this.byKey.set(Buffer.from(m).toString("base64"), i));
    this.counts = Array.from({ length: slots }, () => new Uint8Array(messages.length));
    this.order = Array.from({ length: slots }, () => []);
    this.arrivals = Array.from({ length: slots }, () => new Float64Array(messages.length).fill(Number.NaN));
    this.distinct = new Array<number>(slots).fill(0);
    this.doneAt = new Array<number>(slots).fill(Number.NaN);
    this.reached = new Uint8Array(messages.length);
  }

  indexOf(bytes: Uint8Array): number | undefined {
    if (bytes.length !== this.messages[0]?.length) return undefined;
    return this.byKey.get(Buffer.from(bytes).toString("base64"));
  }

  arrive(slot: number, i: number, t: number): void {
    const c = this.counts[slot]!;
    c[i] = Math.min(255, c[i]! + 1);
    this.order[slot]!.push(i);
    if (c[i] === 1) {
      this.arrivals[slot]![i] = t;
      this.distinct[slot]!++;
      this.reached[i]!++;
      if (this.distinct[slot] === this.doneTarget) this.doneAt[slot] = t;
    }
    if (this.waiters.length > 0) {
      const still = [];
      for (const w of this.waiters) {
        if (w.check()) w.resolve();
        else still.push(w);
      }
      this.waiters = still;
    }
  }

  private wait(check: () => boolean, what: () => string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== entry);
        reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what()}`));
      }, WAIT_MS);
      const entry = { check, resolve: () => (clearTimeout(timer), resolve()) };
      this.waiters.push(entry);
    });
  }

  /** Every receiver has `n` distinct messages. */
  waitDistinct(n: number): Promise<void> {
    return this.wait(
      () => this.distinct.every((d) => d >= n),
      () => `${n} messages at every receiver (have ${this.distinct.join(", ")})`,
    );
  }

  /** Every receiver has message i. */
  waitMessage(i: number): Promise<void> {
    return this.wait(
      () => this.reached[i] === this.slots,
      () => `message ${i} at every receiver (${this.reached[i]} of ${this.slots})`,
    );
  }
}

/** A member with an open Receive stream at its own DS. */
class Receiver {
  lastSeq = 0n;
  setupEntries = 0;
  reconnects = 0;
  readonly errors: string[] = [];
  tracker: RunTracker | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private setupWaiter: (() => void) | undefined;

  constructor(
    readonly slot: number,
    readonly domain: string,
    readonly member: MimiMember,
  ) {}

  start(): void {
    const local = this.member.local!;
    this.loop = (async () => {
      while (!this.abort.signal.aborted) {
        try {
          // Resuming after the last entry seen (which acknowledges everything up to it).
          for await (const e of local.receive(this.lastSeq, this.abort.signal)) this.onEntry(e.sequence, e.mlsMessage);
          if (this.abort.signal.aborted) return;
        } catch {
          if (this.abort.signal.aborted) return;
        }
        this.reconnects++;
        await sleep(100);
      }
    })();
  }

  private onEntry(seq: bigint, bytes: Uint8Array): void {
    const t = performance.now();
    if (seq <= this.lastSeq) this.errors.push(`${this.member.clientId}: sequence ${seq} after ${this.lastSeq}`);
    this.lastSeq = seq;
    const i = this.tracker?.indexOf(bytes);
    if (i !== undefined) this.tracker!.arrive(this.slot, i, t);
    else if (isPrivateMessage(bytes)) this.errors.push(`${this.member.clientId}: an application message that was not sent in this repetition (sequence ${seq})`);
    else {
      this.setupEntries++;
      this.setupWaiter?.();
    }
  }

  async waitSetup(n: number): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (this.setupEntries < n) {
      if (Date.now() > deadline) throw new Error(`${this.member.clientId}: ${this.setupEntries} of ${n} group-building messages`);
      await new Promise<void>((r) => {
        this.setupWaiter = r;
        setTimeout(r, 200);
      });
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }
}

/**
 * Reads a member's queue after `after` through Receive until it holds every
 * message of `tracker` (then 200 ms more, to see any duplicate), and checks
 * each came exactly once, in `order`; returns the last sequence read.
 */
async function readBack(member: MimiMember, after: bigint, tracker: RunTracker, order: readonly number[]): Promise<bigint> {
  const abort = new AbortController();
  const seen: number[] = [];
  const counts = new Uint8Array(tracker.messages.length);
  let distinct = 0;
  let last = after;
  let idle: NodeJS.Timeout | undefined;
  const deadline = setTimeout(() => abort.abort(), 60_000);
  try {
    for await (const e of member.local!.receive(after, abort.signal)) {
      last = e.sequence;
      const i = tracker.indexOf(e.mlsMessage);
      if (i === undefined) {
        if (isPrivateMessage(e.mlsMessage)) throw new Error(`${member.clientId}: an application message that was not sent (sequence ${e.sequence})`);
        continue; // a group-building message (Welcome, commit) not acknowledged yet
      }
      seen.push(i);
      if (++counts[i]! === 1 && ++distinct === tracker.messages.length) idle = setTimeout(() => abort.abort(), 200);
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    clearTimeout(deadline);
    clearTimeout(idle);
  }
  if (distinct !== tracker.messages.length) throw new Error(`${member.clientId}: ${distinct} of ${tracker.messages.length} messages in its queue`);
  const dup = counts.findIndex((c) => c !== 1);
  if (dup >= 0) throw new Error(`${member.clientId}: message ${dup} ${counts[dup]} times in its queue`);
  if (seen.some((x, k) => x !== order[k])) throw new Error(`${member.clientId}: its queue holds the messages in another order than the receivers got them`);
  return last;
}

async function pool<T>(items: readonly T[], width: number, f: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) await f(items[i]!, i);
    }),
  );
}

// ---------------------------------------------------------------- one configuration

interface Built {
  readonly fed: Fed;
  readonly sender: MimiMember;
  /** The sender's own connection to the hub: send_message and Ping. */
  readonly senderDs: DSClient;
  readonly senderTransport: DSTransport;
  /** Every member but the sender, with its domain index. */
  readonly members: { member: MimiMember; d: number }[];
  readonly receivers: Receiver[];
  /** Members read back through Receive after each repetition, by domain. */
  readonly samples: { member: MimiMember; d: number; lastSeq: bigint }[];
  readonly membersPerDomain: number[];
  readonly addCommits: number;
}

async function build(c: FedConfig, samplesPerDomain: number, logLevel: string, nodeArgs: readonly string[]): Promise<Built> {
  const domains = DOMAIN_NAMES.slice(0, c.domains);
  const fed = await Fed.start(domains, logLevel, nodeArgs);
  try {
    const clients = domains.map((_, d) => new DSClient(fed.nodes[d]!.transport));
    // Spread evenly; the hub domain gets the remainder first (it holds the sender).
    const perDomain = domains.map((_, d) => Math.floor(c.members / c.domains) + (d < c.members % c.domains ? 1 : 0));
    // Round robin over the domains, so every add_clients commit spans all of them.
    const plan: { d: number; name: string }[] = [];
    const left = [...perDomain];
    left[0]!--; // the sender
    for (let k = 0; plan.length < c.members - 1; k++) {
      const d = k % c.domains;
      if (left[d]! > 0) {
        plan.push({ d, name: `m${plan.length + 1}` });
        left[d]!--;
      }
    }
    const newMember = async (d: number, name: string): Promise<MimiMember> => {
      const m = await MimiMember.create({ clientId: `mimi://${domains[d]}/u/${name}/d/1`, hub: clients[d]!, local: fed.nodes[d]!.transport });
      await m.register();
      await m.publishKeyPackages(1);
      return m;
    };
    const senderTransport = createDSTransport({ baseUrl: fed.hub.server.url, ca: fed.ca });
    const senderDs = new DSClient(senderTransport);
    const sender = await MimiMember.create({ clientId: `mimi://${domains[0]}/u/sender/d/1`, hub: senderDs, local: fed.hub.transport });
    await sender.register();
    const members: { member: MimiMember; d: number }[] = new Array(plan.length);
    const t = performance.now();
    await pool(plan, 16, async (p, i) => {
      members[i] = { member: await newMember(p.d, p.name), d: p.d };
    });
    log(`  ${c.members} members registered with their DSs, KeyPackages published (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    // Receivers and samples: the first members of each domain (all in the first add_clients commit).
    const receivers: Receiver[] = [];
    const samples: Built["samples"] = [];
    for (let d = 0; d < c.domains; d++) {
      const mine = members.filter((m) => m.d === d);
      receivers.push(new Receiver(d, domains[d]!, mine[0]!.member));
      for (const m of mine.slice(1, 1 + samplesPerDomain)) samples.push({ ...m, lastSeq: 0n });
    }
    for (const r of receivers) r.start();

    await sender.createGroup(await hubSender(senderDs));
    let addCommits = 0;
    for (let k = 0; k < members.length; k += ADD_BATCH) {
      const ids = members.slice(k, k + ADD_BATCH).map((m) => m.member.clientId);
      const tb = performance.now();
      // KeyPackages through the hub (which asks the guests for theirs), then one commit adding them all.
      await sender.addClients(ids);
      addCommits++;
      log(`  add_clients commit ${addCommits}: ${ids.length} members (${((performance.now() - tb) / 1000).toFixed(1)} s)`);
    }
    // Every receiver got its Welcome and the later commits: the guests have processed the whole build.
    await Promise.all(receivers.map((r) => r.waitSetup(addCommits)));
    return { fed, sender, senderDs, senderTransport, members, receivers, samples, membersPerDomain: perDomain, addCommits };
  } catch (err) {
    await fed.close();
    throw err;
  }
}

/** `count` send_message requests of distinct 1 KB application messages, signed by the sender. */
async function prepareMessages(sender: MimiMember, count: number, overhead: number): Promise<{ requests: Uint8Array[]; messages: Uint8Array[] }> {
  const requests: Uint8Array[] = [];
  const messages: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const body = new Uint8Array(MESSAGE_BYTES - overhead).fill(0x61);
    new DataView(body.buffer).setUint32(0, i);
    const sent = await sender.prepareSend(body);
    sender.state = sent.newState;
    const req = await buildDSRequest(
      { requestType: "send_message", sendMessageRequest: { applicationMessage: sent.message } },
      { kind: "member", senderIndex: sender.leafIndex, signaturePrivateKey: sender.signatureKeyPair.signKey, signature: sender.cs.signature },
    );
    requests.push(encodeDSRequest(req));
    messages.push(encodeMLSMessage(sent.message));
  }
  return { requests, messages };
}

async function submitOk(ds: DSClient, request: Uint8Array): Promise<void> {
  const body = decodeDSResponse(await ds.submit(request)).responseBody;
  if (body.responseType !== "ok") throw new Error(`send_message answered ${body.responseType}${body.responseType === "error" ? `: ${body.error.message}` : ""}`);
}

async function runConfig(c: FedConfig, o: Required<Omit<FederationOptions, "quick" | "configs">>): Promise<FedConfigResult> {
  const tb = performance.now();
  log(`federation ${c.members} members over ${c.domains} domains: starting ${c.domains} serve processes, building the group`);
  const b = await build(c, o.samples, o.logLevel, o.serverNodeArgs);
  const { fed, sender, senderDs, receivers } = b;
  const checks: string[] = [];
  try {
    const buildS = (performance.now() - tb) / 1000;
    log(`  built in ${buildS.toFixed(1)} s`);
    const probe = await sender.prepareSend(new Uint8Array(MESSAGE_BYTES));
    const overhead = encodeMLSMessage(probe.message).length - MESSAGE_BYTES;
    sender.state = probe.newState;
    const guests = b.members.filter((m) => m.d > 0);
    const guestSeq = async (): Promise<bigint[]> => Promise.all(guests.map(async (m) => (await fed.nodes[m.d]!.store.queueInfo(clientQueue(m.member.clientId))).lastSeq));

    // One warm-up message (JIT, connections, statements), checked like the others but not timed.
    {
      const w = await prepareMessages(sender, 1, overhead);
      const tracker = new RunTracker(w.messages, receivers.length);
      tracker.doneTarget = 1;
      for (const r of receivers) r.tracker = tracker;
      await submitOk(senderDs, w.requests[0]!);
      await tracker.waitDistinct(1);
      for (const s of b.samples) s.lastSeq = await readBack(s.member, s.lastSeq, tracker, tracker.order[0]!);
    }

    const reps: FedRep[] = [];
    for (let rep = 0; rep < o.reps; rep++) {
      const { requests, messages } = await prepareMessages(sender, o.messages + o.sequential, overhead);
      const tracker = new RunTracker(messages, receivers.length);
      tracker.doneTarget = o.messages;
      for (const r of receivers) r.tracker = tracker;
      const seqBefore = await guestSeq();

      const pipelined = async (): Promise<PipelinedResult> => {
        const rows0 = fed.rows();
        const s0 = fed.snapshot();
        let next = 0;
        let acceptedAt = 0;
        await Promise.all(
          Array.from({ length: o.concurrency }, async () => {
            for (let i = next++; i < o.messages; i = next++) await submitOk(senderDs, requests[i]!);
          }),
        ).then(() => (acceptedAt = performance.now()));
        await tracker.waitDistinct(o.messages);
        const done = performance.now();
        await sleep(SETTLE_MS); // the guests' acknowledgements, the last group commits
        const s1 = fed.snapshot();
        const rows1 = fed.rows();
        const domainDoneMs: Record<string, number> = {};
        receivers.forEach((r) => (domainDoneMs[r.domain] = tracker.doneAt[r.slot]! - s0.t));
        return {
          count: o.messages,
          elapsedMs: done - s0.t,
          acceptedMs: acceptedAt - s0.t,
          domainDoneMs,
          processes: fed.deltas(s0, s1, rows0, rows1),
          benchCpuMs: s1.benchCpu - s0.benchCpu,
        };
      };
      const ping = async (): Promise<PhaseResult> => {
        const s0 = fed.snapshot();
        let next = 0;
        await Promise.all(
          Array.from({ length: o.concurrency }, async () => {
            for (let i = next++; i < o.messages; i = next++) await senderDs.hub.ping({});
          }),
        );
        const done = performance.now();
        await sleep(SETTLE_MS);
        const s1 = fed.snapshot();
        return { count: o.messages, elapsedMs: done - s0.t, processes: fed.deltas(s0, s1), benchCpuMs: s1.benchCpu - s0.benchCpu };
      };

      // Alternate the order so that neither always runs on a warmer (or busier) process.
      let p: PipelinedResult;
      let q: PhaseResult;
      if (rep % 2 === 0) {
        q = await ping();
        p = await pipelined();
      } else {
        p = await pipelined();
        q = await ping();
      }

      // One at a time: each message sent when the previous one reached every receiver.
      const s0 = fed.snapshot();
      const submitMs: number[] = [];
      const latencyMs: Record<string, number[]> = Object.fromEntries(receivers.map((r) => [r.domain, []]));
      const lastDomainMs: number[] = [];
      for (let i = o.messages; i < o.messages + o.sequential; i++) {
        const t0 = performance.now();
        await submitOk(senderDs, requests[i]!);
        submitMs.push(performance.now() - t0);
        await tracker.waitMessage(i);
        let last = 0;
        for (const r of receivers) {
          const l = tracker.arrivals[r.slot]![i]! - t0;
          latencyMs[r.domain]!.push(l);
          last = Math.max(last, l);
        }
        lastDomainMs.push(last);
      }
      const seqElapsed = performance.now() - s0.t;
      await sleep(SETTLE_MS);
      const s1 = fed.snapshot();
      const sequential: SequentialResult = {
        count: o.sequential,
        elapsedMs: seqElapsed,
        processes: fed.deltas(s0, s1),
        benchCpuMs: s1.benchCpu - s0.benchCpu,
        submitMs,
        latencyMs,
        lastDomainMs,
      };

      // ---- delivery checks
      const n = messages.length;
      for (const r of receivers) {
        if (r.errors.length > 0) throw new Error(`receiver ${r.member.clientId}: ${r.errors.join("; ")}`);
        const dup = tracker.counts[r.slot]!.findIndex((x) => x !== 1);
        if (dup >= 0) throw new Error(`receiver ${r.member.clientId} got message ${dup} ${tracker.counts[r.slot]![dup]} times`);
        const ord = tracker.order[r.slot]!;
        if (ord.length !== n || ord.some((x, k) => x !== tracker.order[0]![k])) throw new Error(`receiver ${r.member.clientId}: another order than ${receivers[0]!.member.clientId}`);
      }
      const seqOrder = tracker.order[0]!.slice(o.messages);
      if (seqOrder.some((x, k) => x !== o.messages + k)) throw new Error("the one-at-a-time messages arrived in another order than sent");
      await pool(b.samples, 8, async (s) => {
        s.lastSeq = await readBack(s.member, s.lastSeq, tracker, tracker.order[0]!);
      });
      const seqAfter = await guestSeq();
      const wrong = guests.filter((_, k) => seqAfter[k]! - seqBefore[k]! !== BigInt(n));
      if (wrong.length > 0) {
        const k = guests.indexOf(wrong[0]!);
        throw new Error(`${wrong.length} guest members' queues did not get exactly ${n} appends (e.g. ${wrong[0]!.member.clientId}: ${seqAfter[k]! - seqBefore[k]!})`);
      }
      if (rep === 0) {
        checks.push(
          `receivers (${receivers.map((r) => r.domain).join(", ")}): each of the ${n} messages exactly once, all in the same order, one-at-a-time ones in send order`,
          `${b.samples.length} more members (${o.samples} per domain) read back through Receive: every message once, in the receivers' order`,
          `${guests.length} guest members: exactly ${n} appends to each queue at its own DS`,
        );
      }

      // ---- every member acknowledges its queue (not timed)
      for (const r of receivers) await r.member.local!.acknowledge(r.lastSeq);
      const acked = new Set([...receivers.map((r) => r.member), ...b.samples.map((s) => s.member)]);
      await pool(
        b.members.filter((m) => !acked.has(m.member)),
        32,
        async (m) => {
          const info = await fed.nodes[m.d]!.store.queueInfo(clientQueue(m.member.clientId));
          if (info.length > 0) await m.member.local!.acknowledge(info.lastSeq);
        },
      );

      reps.push({ pipelined: p, ping: q, sequential });
      const hubCpu = p.processes[0]!.cpuMs / p.count;
      log(
        `  rep ${rep + 1}/${o.reps}: ${fmt((p.count * 1000) / p.elapsedMs)} msg/s end to end (${o.concurrency} in flight); CPU ms/msg: hub ${fmt(hubCpu)} (Ping ${fmt(q.processes[0]!.cpuMs / q.count)}), guests ${p.processes
          .slice(1)
          .map((d) => fmt(d.cpuMs / p.count))
          .join(" / ")}, load generator ${fmt(p.benchCpuMs / p.count)}; one at a time ${fmt(median(lastDomainMs))} ms to the last domain`,
      );
    }
    return {
      members: c.members,
      domains: fed.nodes.map((x) => x.domain),
      membersPerDomain: b.membersPerDomain,
      addCommits: b.addCommits,
      buildS,
      messageBytes: MESSAGE_BYTES,
      reps,
      summary: summarize(reps),
      checks,
    };
  } finally {
    for (const r of receivers) await r.stop();
    b.senderTransport.close();
    await fed.close();
  }
}

function summarize(reps: readonly FedRep[]): FedSummary {
  const per = (f: (r: FedRep) => number): number => median(reps.map(f));
  const domains = reps[0]!.pipelined.processes.length;
  const guestIdx = Array.from({ length: domains - 1 }, (_, k) => k + 1);
  const rowsOf = (d: ProcessDelta): number => Object.values(d.rows).reduce((a, b) => a + b, 0);
  const allLatency = reps.flatMap((r) => r.sequential.lastDomainMs);
  return {
    e2eMsgsPerS: per((r) => (r.pipelined.count * 1000) / r.pipelined.elapsedMs),
    acceptedMsgsPerS: per((r) => (r.pipelined.count * 1000) / r.pipelined.acceptedMs),
    hubCpuMsPerMsg: per((r) => r.pipelined.processes[0]!.cpuMs / r.pipelined.count),
    hubCpuMsPerPing: per((r) => r.ping.processes[0]!.cpuMs / r.ping.count),
    hubCpuMsPerMsgSequential: per((r) => r.sequential.processes[0]!.cpuMs / r.sequential.count),
    guestCpuMsPerMsg: guestIdx.map((g) => per((r) => r.pipelined.processes[g]!.cpuMs / r.pipelined.count)),
    hubRowsPerMsg: per((r) => rowsOf(r.pipelined.processes[0]!) / r.pipelined.count),
    guestRowsPerMsg: guestIdx.map((g) => per((r) => rowsOf(r.pipelined.processes[g]!) / r.pipelined.count)),
    hubWriteKBPerMsg: per((r) => r.pipelined.processes[0]!.writeBytes / 1024 / r.pipelined.count),
    guestWriteKBPerMsg: guestIdx.map((g) => per((r) => r.pipelined.processes[g]!.writeBytes / 1024 / r.pipelined.count)),
    benchCpuMsPerMsg: per((r) => r.pipelined.benchCpuMs / r.pipelined.count),
    allCpuMsPerMsg: per((r) => (r.pipelined.benchCpuMs + r.pipelined.processes.reduce((a, d) => a + d.cpuMs, 0)) / r.pipelined.count),
    pingsPerS: per((r) => (r.ping.count * 1000) / r.ping.elapsedMs),
    latencyP50Ms: quantile(allLatency, 0.5),
    latencyP99Ms: quantile(allLatency, 0.99),
    submitP50Ms: quantile(
      reps.flatMap((r) => r.sequential.submitMs),
      0.5,
    ),
  };
}

// ---------------------------------------------------------------- entry points

export async function runFederationBench(o: FederationOptions = {}): Promise<FederationResult> {
  const quick = o.quick === true;
  const configs = o.configs ?? parseConfigs(quick ? QUICK_CONFIGS : DEFAULT_CONFIGS);
  const opts = {
    reps: o.reps ?? (quick ? 2 : 3),
    messages: o.messages ?? (quick ? 100 : 200),
    sequential: o.sequential ?? (quick ? 20 : 30),
    concurrency: o.concurrency ?? 16,
    samples: o.samples ?? 3,
    logLevel: o.logLevel ?? "warn",
    serverNodeArgs: o.serverNodeArgs ?? [],
  };
  for (const c of configs) {
    if (c.domains < 2 || c.domains > DOMAIN_NAMES.length) throw new Error(`--configs: 2 to ${DOMAIN_NAMES.length} domains, not ${c.domains}`);
    if (c.members < 2 * c.domains + opts.samples * c.domains) throw new Error(`--configs: ${c.members} members are too few for ${c.domains} domains`);
  }
  const out: FedConfigResult[] = [];
  for (const c of configs) out.push(await runConfig(c, opts));
  const model = fitHubCpu(out);
  return { ...opts, clockTicksPerS: CLK_TCK, configs: out, ...(model !== undefined ? { model } : {}) };
}

export function parseConfigs(s: string): FedConfig[] {
  return s.split(",").map((x) => {
    const m = /^(\d+)x(\d+)$/.exec(x.trim());
    if (m === null) throw new Error(`--configs: "${x}" is not MEMBERSxDOMAINS`);
    return { members: Number(m[1]), domains: Number(m[2]) };
  });
}

export function federationTable(r: FederationResult): string {
  const name = (c: FedConfigResult): string => `${c.members} x ${c.domains.length}`.padStart(17);
  const lines = [
    `Federation: one 1 KB application message to a group spread over domains (hub a.bench; ${r.reps} reps of ${r.messages} messages with ${r.concurrency} in flight, then ${r.sequential} one at a time; medians; CPU = utime+stime of each process)`,
    "members x domains | per domain  | e2e msg/s | hub CPU ms/msg | hub CPU ms/Ping | hub ms/msg one at a time | guest CPU ms/msg | one at a time to last domain p50 / p99 ms",
  ];
  for (const c of r.configs) {
    const s = c.summary;
    lines.push(
      [
        name(c),
        c.membersPerDomain.join("/").padEnd(11),
        fmt(s.e2eMsgsPerS).padStart(9),
        fmt(s.hubCpuMsPerMsg).padStart(14),
        fmt(s.hubCpuMsPerPing).padStart(15),
        fmt(s.hubCpuMsPerMsgSequential).padStart(24),
        s.guestCpuMsPerMsg.map((x) => fmt(x)).join(" / ").padStart(16),
        `${fmt(s.latencyP50Ms)} / ${fmt(s.latencyP99Ms)}`,
      ].join(" | "),
    );
  }
  lines.push("", "members x domains | hub rows/msg | hub KB written/msg | guest rows/msg | guest KB written/msg | load generator CPU ms/msg | all processes CPU ms/msg | send_message accepted/s | Ping/s");
  for (const c of r.configs) {
    const s = c.summary;
    lines.push(
      [
        name(c),
        fmt(s.hubRowsPerMsg).padStart(12),
        fmt(s.hubWriteKBPerMsg).padStart(18),
        s.guestRowsPerMsg.map((x) => fmt(x)).join(" / ").padStart(14),
        s.guestWriteKBPerMsg.map((x) => fmt(x)).join(" / ").padStart(20),
        fmt(s.benchCpuMsPerMsg).padStart(25),
        fmt(s.allCpuMsPerMsg).padStart(24),
        fmt(s.acceptedMsgsPerS).padStart(23),
        fmt(s.pingsPerS),
      ].join(" | "),
    );
  }
  if (r.model !== undefined) {
    const m = r.model;
    lines.push(
      "",
      `hub CPU ms/msg fitted over the configurations: ${fmt(m.baseMs)} + ${fmt(m.perGuestDomainMs, 3)} per guest domain + ${fmt(m.perLocalRecipientMs, 4)} per hub-local recipient (largest residual ${fmt(m.maxResidualMs)} ms)`,
    );
  }
  return lines.join("\n");
}

export function parseFederationArgs(args: readonly string[]): FederationOptions {
  const val = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const num = (name: string): number | undefined => (val(name) !== undefined ? Number(val(name)) : undefined);
  const o: { -readonly [K in keyof FederationOptions]: FederationOptions[K] } = { quick: args.includes("--quick") };
  if (val("configs") !== undefined) o.configs = parseConfigs(val("configs")!);
  if (num("reps") !== undefined) o.reps = num("reps");
  if (num("messages") !== undefined) o.messages = num("messages");
  if (num("sequential") !== undefined) o.sequential = num("sequential");
  if (num("concurrency") !== undefined) o.concurrency = num("concurrency");
  if (num("samples") !== undefined) o.samples = num("samples");
  if (val("fed-log-level") !== undefined) o.logLevel = val("fed-log-level");
  if (val("fed-server-node-args") !== undefined) o.serverNodeArgs = val("fed-server-node-args")!.split(" ");
  return o;
}

// Standalone: node dist/bench/federation.js [options]
if (process.argv[1] !== undefined && /bench[/\\]federation\.[jt]s$/.test(process.argv[1])) {
  const r = await runFederationBench(parseFederationArgs(process.argv.slice(2)));
  console.log(federationTable(r));
}
