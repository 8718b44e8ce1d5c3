// Federation: application messages to a big group spread over several
// domains. Real `serve` processes, one per domain (a.bench is the hub), on
// loopback with one development CA, peers configured, mutual TLS, SQLite
// stores with synchronous=FULL in temp dirs.
//
//   node dist/bench/federation.js [--quick] [--configs=1000x3,100x3,10000x3,1000x2,67x2]
//        [--reps=N] [--messages=M] [--sequential=K] [--concurrency=W] [--samples=S]
//        [--online=N] [--fed-log-level=warn] [--fed-server-node-args="--cpu-prof --cpu-prof-dir=DIR"]
//
// Defaults: configurations 1000x3, 100x3, 10000x3, 1000x2, 67x2 (quick: 1000x3,
// 100x3), 3 repetitions (quick 2) of M = 200 (100) pipelined messages with
// W = 16 in flight, M Pings, K = 30 (20) messages one at a time and N = 1,000
// online recipients (at most the members).
//
// Per configuration (members x domains), members spread evenly over the
// domains, each registered with its own DS and its KeyPackage published there;
// the creator (on the hub) adds everyone in a few big add_clients commits (the
// hub fetches the guests' KeyPackages from their DSs). Delivery is measured in
// two parts, per repetition:
//
//   - into the stores: the creator sends M distinct 1 KB application messages
//     (send_message), W in flight, with no Receive stream open anywhere;
//     messages/s = M / (time until every guest DS has stored the last one:
//     its at-most-once mark for the hub's stream, read through the Store port
//     on its SQLite file, reaches the hub's last outbox sequence). Stored
//     there means durable and ready for every recipient (a guest writes one
//     feed entry per message);
//   - Ping: the same hub answers M HubService/Ping with W in flight (baseline);
//   - one at a time: K messages, each sent when the previous one is in every
//     guest's store and at one online recipient per domain: latency to the
//     last domain's store and to the last domain's client;
//   - online: N recipients (spread over the domains) keep Receive streams open
//     (they first catch up on the messages above, untimed); M more messages,
//     W in flight; messages/s until every online recipient has all of them,
//     and CPU per delivered message (message x online recipient).
//
// Around each phase the CPU time (utime + stime from /proc/<pid>/stat) of
// every server process, the bytes it wrote to storage (/proc/<pid>/io
// write_bytes) and the net number of rows in its SQLite file (all tables,
// counted by name) are read.
//
// Delivery checks (every repetition; any failure aborts the bench):
//   - every online recipient got every message of the repetition exactly
//     once, all in the same order (the hub's), the one-at-a-time messages in
//     the order sent;
//   - `samples` further members per domain (the hub's own domain included)
//     read their queue through ClientService/Receive afterwards: every message
//     exactly once, in that order;
//   - every guest DS: its feed for the group got exactly one entry per message;
//     every member of every guest domain that was not reading has exactly
//     those entries pending for it (Store.feedMemberships: its cursor did not
//     move, the feed's head moved by the number of messages).
// Online recipients acknowledge what they received, as clients would.
import { mkdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { buildDSRequest, createDSTransport, DSClient, MimiMember, type DSTransport } from "../src/client/index.js";
import { LocalClientApi } from "../src/client/local.js";
import { fanoutSource, guestFeedId } from "../src/delivery/guest.js";
import { HubIdentity } from "../src/ds/hub-identity.js";
import { openStore, outboxQueue, type Store } from "../src/store/index.js";
import { decodeDSResponse, encodeDSRequest, encodeMLSMessage } from "../src/wire/index.js";
import { checkpointBytes, storeFloorKBPerMessage, writeBytesOf } from "./storefloor.js";
import { devCerts, fmt, freePort, hubSender, log, median, quantile, sleep, startServe, type ServeProcess } from "./lib.js";

export interface FedConfig {
  readonly members: number;
  readonly domains: number;
}

export interface FederationOptions {
  readonly quick?: boolean;
  readonly configs?: readonly FedConfig[];
  readonly reps?: number;
  /** Pipelined messages (and Pings) per repetition, in each of the two pipelined phases. */
  readonly messages?: number;
  /** One-at-a-time messages per repetition. */
  readonly sequential?: number;
  /** Requests in flight in the pipelined and Ping phases. */
  readonly concurrency?: number;
  /** Members per domain whose queues are read back through Receive after each repetition. */
  readonly samples?: number;
  /** Recipients with an open Receive stream in the online phase (spread over the domains). */
  readonly online?: number;
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
  /**
   * Bytes the process caused to be written to storage (/proc/<pid>/io write_bytes); in the stores
   * phase plus the checkpoint that ends the window (the window's WAL pages copied into the database).
   */
  readonly writeBytes: number;
  /** SQLite transactions its store committed. */
  readonly transactions: number;
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

export interface StoresResult extends PhaseResult {
  /** Until every send_message was answered (the hub's own store has them). */
  readonly acceptedMs: number;
  /** Per guest domain: until its store had the last message. */
  readonly domainDoneMs: Record<string, number>;
  /** Per process: the storage floor (bench/storefloor.ts) for its messages and transactions, KB per message. */
  readonly floorKBPerMsg: number[];
}

export interface SequentialResult extends PhaseResult {
  /** send_message round trips, ms. */
  readonly submitMs: number[];
  /** Per guest domain: from the send until its store had the message, ms. */
  readonly storeLatencyMs: Record<string, number[]>;
  /** Per message: until the last guest store had it, ms. */
  readonly lastStoreMs: number[];
  /** Per domain: from the send until its online recipient had it, ms. */
  readonly clientLatencyMs: Record<string, number[]>;
  /** Per message: until the last domain's online recipient had it, ms. */
  readonly lastClientMs: number[];
}

export interface OnlineResult extends PhaseResult {
  /** Recipients with an open Receive stream. */
  readonly recipients: number;
  /** Messages x recipients. */
  readonly delivered: number;
}

export interface FedRep {
  readonly stores: StoresResult;
  readonly ping: PhaseResult;
  readonly sequential: SequentialResult;
  readonly online: OnlineResult;
}

export interface FedSummary {
  /** Into the guests' stores. */
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
  /** Messages per store transaction, and the storage floor at that many transactions (KB per message). */
  readonly hubMsgsPerTransaction: number;
  readonly guestMsgsPerTransaction: number[];
  readonly hubFloorKBPerMsg: number;
  readonly guestFloorKBPerMsg: number[];
  /** The load generator (sender, this process). */
  readonly benchCpuMsPerMsg: number;
  /** Every server process and the load generator: what the 2 cores had to do per message. */
  readonly allCpuMsPerMsg: number;
  readonly pingsPerS: number;
  /** One at a time, to the last guest store. */
  readonly storeLatencyP50Ms: number;
  readonly storeLatencyP99Ms: number;
  /** One at a time, to the last domain's online recipient. */
  readonly clientLatencyP50Ms: number;
  readonly clientLatencyP99Ms: number;
  readonly submitP50Ms: number;
  /** Online phase. */
  readonly onlineRecipients: number;
  readonly onlineMsgsPerS: number;
  readonly onlineDeliveriesPerS: number;
  /** Every server process's CPU per delivered message (message x online recipient). */
  readonly onlineServerCpuMsPerDelivery: number;
  readonly onlineHubCpuMsPerMsg: number;
  readonly onlineGuestCpuMsPerMsg: number[];
  readonly onlineBenchCpuMsPerDelivery: number;
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
  readonly online: number;
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
/** Online recipients per client connection in the online phase (the DS allows 16 streaming calls per connection). */
const RECEIVERS_PER_CONNECTION = 8;
/** Largest add_clients commit while building (KeyPackages per commit); groups above 2,000 members use bigger ones. */
const ADD_BATCH = 340;
const BIG_ADD_BATCH = 2000;
const DOMAIN_NAMES = ["a.bench", "b.bench", "c.bench", "d.bench", "e.bench"];
const SETTLE_MS = 300;
/**
 * (a) 1,000 members over 3 domains, (b) 100 over 3, (e) 10,000 over 3, (c) 1,000 over 2, and
 * (d) 67 over 2: the same 34 members on the hub as (b) (34/33), so (b) - (d) is the cost of one
 * more guest domain alone, as (a) - (b) is that of 300 more members on each domain.
 */
const DEFAULT_CONFIGS = "1000x3,100x3,10000x3,1000x2,67x2";
const QUICK_CONFIGS = "1000x3,100x3";
const WAIT_MS = 300_000;

// ---------------------------------------------------------------- process statistics (Linux /proc)

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
  /** Its plain-HTTP /metrics (--metrics-listen): the store's transactions. */
  readonly metricsUrl: string;
}

interface Snapshot {
  readonly t: number;
  readonly cpu: number[];
  readonly io: number[];
  /** SQLite transactions (group commits) of each DS's store so far. */
  readonly transactions: number[];
  readonly benchCpu: number;
}

/** The store's transactions so far: the count of mimi_ds_store_group_commit_applies. */
async function storeTransactionsOf(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const m = /^mimi_ds_store_group_commit_applies_count(?:\{\})?\s+(\d+)/m.exec(text);
  return m ? Number(m[1]) : Number.NaN;
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
        const metricsPort = await freePort();
        const server = await startServe({
          domain: s.domain,
          dataDir: s.dataDir,
          certsDir,
          logLevel,
          nodeArgs,
          port: s.port,
          args: ["--peers", peersFile, "--metrics-listen", `127.0.0.1:${metricsPort}`],
        });
        const transport = createDSTransport({ baseUrl: server.url, ca });
        const sqlite = join(s.dataDir, "ds.sqlite");
        nodes.push({ domain: s.domain, dataDir: s.dataDir, sqlite, server, transport, store: await openStore(sqlite), metricsUrl: `http://127.0.0.1:${metricsPort}/metrics` });
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

  /** The hub's last outbox sequence for each guest domain. */
  async outboxHeads(): Promise<bigint[]> {
    return Promise.all(this.nodes.slice(1).map(async (g) => (await this.hub.store.queueInfo(outboxQueue(g.domain))).lastSeq));
  }

  /**
   * Waits until each guest's store has processed the hub's stream up to
   * `targets[k]` (its at-most-once mark, read through the Store port on its
   * SQLite file every millisecond); the time each got there.
   */
  async waitStored(targets: readonly bigint[]): Promise<number[]> {
    const guests = this.nodes.slice(1);
    const at: number[] = guests.map(() => Number.NaN);
    const source = fanoutSource(this.hub.domain);
    const deadline = performance.now() + WAIT_MS;
    for (;;) {
      const now = performance.now();
      for (let k = 0; k < guests.length; k++) if (Number.isNaN(at[k]!) && (await guests[k]!.store.isProcessed(source, targets[k]!))) at[k] = now;
      if (at.every((t) => !Number.isNaN(t))) return at;
      if (now > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for the guests' stores (outbox sequences ${targets.join(", ")})`);
      await sleep(1);
    }
  }

  /** Waits until every guest stored everything the hub's outbox holds for it now; when each did, by domain. */
  async guestsCaughtUp(): Promise<Record<string, number>> {
    const at = await this.waitStored(await this.outboxHeads());
    return Object.fromEntries(this.nodes.slice(1).map((g, k) => [g.domain, at[k]!]));
  }

  async snapshot(): Promise<Snapshot> {
    const transactions = await Promise.all(this.nodes.map((n) => storeTransactionsOf(n.metricsUrl)));
    return {
      t: performance.now(),
      cpu: this.nodes.map((n) => cpuMsOf(n.server.child.pid!)),
      io: this.nodes.map((n) => writeBytesOf(n.server.child.pid!)),
      transactions,
      benchCpu: cpuUsageMs(),
    };
  }

  /** Checkpoints every DS's store from this process (bench/storefloor.ts checkpointBytes): the bytes each took. */
  checkpoint(): number[] {
    return this.nodes.map((n) => checkpointBytes(n.sqlite));
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
      return { domain: n.domain, cpuMs: b.cpu[i]! - a.cpu[i]!, writeBytes: b.io[i]! - a.io[i]!, transactions: b.transactions[i]! - a.transactions[i]!, rows };
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

// ---------------------------------------------------------------- messages and receivers

/** MLSMessage: version (uint16) then wire_format (uint16); 2 = mls_private_message. */
const isPrivateMessage = (b: Uint8Array): boolean => b.length >= 4 && b[2] === 0 && b[3] === 2;

interface Waiter {
  /** Slots still missing what is waited for. */
  readonly missing: Set<number>;
  /** What a slot must have: n distinct messages, or message i. */
  readonly done: (slot: number) => boolean;
  readonly resolve: () => void;
}

/** The messages of one repetition and which receiver (slot) got which, when. */
class RunTracker {
  private readonly byKey = new Map<string, number>();
  readonly counts: Uint8Array[];
  readonly order: number[][];
  readonly arrivals: Float64Array[];
  readonly distinct: number[];
  private waiters: Waiter[] = [];

  constructor(
    readonly messages: readonly Uint8Array[],
    readonly slots: number,
  ) {
    messages.forEach((m, i) => this.byKey.set(Buffer.from(m).toString("base64"), i));
    this.counts = Array.from({ length: slots }, () => new Uint8Array(messages.length));
    this.order = Array.from({ length: slots }, () => []);
    this.arrivals = Array.from({ length: slots }, () => new Float64Array(messages.length).fill(Number.NaN));
    this.distinct = new Array<number>(slots).fill(0);
  }

  indexOf(bytes: Uint8Array): number | undefined {
    if (bytes.length !== this.messages[0]?.length) return undefined;
    return this.byKey.get(Buffer.from(bytes).toString("base64"));
  }

  arrive(slot: number, i: number, t: number): void {
    const c = this.counts[slot]!;
    c[i] = Math.min(255, c[i]! + 1);
    this.order[slot]!.push(i);
    if (c[i] !== 1) return;
    this.arrivals[slot]![i] = t;
    this.distinct[slot]!++;
    if (this.waiters.length === 0) return;
    this.waiters = this.waiters.filter((w) => {
      if (!w.missing.has(slot) || !w.done(slot)) return true;
      w.missing.delete(slot);
      if (w.missing.size > 0) return true;
      w.resolve();
      return false;
    });
  }

  private wait(slots: readonly number[], done: (slot: number) => boolean, what: () => string): Promise<void> {
    const missing = new Set(slots.filter((s) => !done(s)));
    if (missing.size === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== entry);
        reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what()} (${missing.size} receivers missing it)`));
      }, WAIT_MS);
      const entry: Waiter = { missing, done, resolve: () => (clearTimeout(timer), resolve()) };
      this.waiters.push(entry);
    });
  }

  /** Every one of `slots` has `n` distinct messages (messages beyond n are not sent yet). */
  waitDistinct(slots: readonly number[], n: number): Promise<void> {
    return this.wait(slots, (s) => this.distinct[s]! >= n, () => `${n} messages`);
  }

  /** Every one of `slots` has message i. */
  waitMessage(slots: readonly number[], i: number): Promise<void> {
    return this.wait(slots, (s) => this.counts[s]![i]! > 0, () => `message ${i}`);
  }
}

/** A member that keeps a Receive stream open at its own DS while started. */
class Receiver {
  lastSeq = 0n;
  /** The member's ClientService on its own connection (set by build), else the member's shared one. */
  local: LocalClientApi | undefined;
  reconnects = 0;
  readonly errors: string[] = [];
  tracker: RunTracker | undefined;
  private abort = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    readonly slot: number,
    readonly domain: string,
    readonly member: MimiMember,
  ) {}

  get running(): boolean {
    return this.loop !== undefined;
  }

  start(): void {
    if (this.loop !== undefined) return;
    const local = this.local ?? this.member.local!;
    this.abort = new AbortController();
    const signal = this.abort.signal;
    this.loop = (async () => {
      while (!signal.aborted) {
        try {
          // Resuming after the last entry seen (which acknowledges everything up to it).
          for await (const e of local.receive(this.lastSeq, signal)) this.onEntry(e.sequence, e.mlsMessage);
          if (signal.aborted) return;
        } catch {
          if (signal.aborted) return;
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
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.loop = undefined;
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
  if (seen.some((x, k) => x !== order[k])) throw new Error(`${member.clientId}: its queue holds the messages in another order than the online recipients got them`);
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
  /** The receivers' connections (a client's Receive streams per connection are limited, as by a real DS). */
  readonly receiverTransports: DSTransport[];
  /** Every member but the sender, with its domain index. */
  readonly members: { member: MimiMember; d: number }[];
  /** Slot d < domains: one online recipient per domain (also in the one-at-a-time phase); the rest: online only. */
  readonly receivers: Receiver[];
  /** Members read back through Receive after each repetition, by domain. */
  readonly samples: { member: MimiMember; d: number; lastSeq: bigint }[];
  readonly membersPerDomain: number[];
  readonly addCommits: number;
  readonly groupId: Uint8Array;
}

async function build(c: FedConfig, samplesPerDomain: number, online: number, logLevel: string, nodeArgs: readonly string[]): Promise<Built> {
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
    // Joiners take the tree from welcome_info (the DS's history), so the Welcome carries none:
    // with it, ts-mls hashes the tree-sized encrypted GroupInfo once per joiner (2,000 per
    // commit here), and before the patch of docs/engine.md ("ts-mls patch" 7) ran out of memory.
    const sender = await MimiMember.create({ clientId: `mimi://${domains[0]}/u/sender/d/1`, hub: senderDs, local: fed.hub.transport, welcomeRatchetTree: false });
    await sender.register();
    const members: { member: MimiMember; d: number }[] = new Array(plan.length);
    const t = performance.now();
    await pool(plan, 16, async (p, i) => {
      members[i] = { member: await newMember(p.d, p.name), d: p.d };
      if (i > 0 && i % 2000 === 0) log(`  ${i} members registered (${((performance.now() - t) / 1000).toFixed(0)} s)`);
    });
    log(`  ${c.members} members registered with their DSs, KeyPackages published (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    // Per domain: the first member is its one-at-a-time recipient, the next ones are samples, then online recipients.
    const receivers: Receiver[] = [];
    const samples: Built["samples"] = [];
    const mine = domains.map((_, d) => members.filter((m) => m.d === d));
    for (let d = 0; d < c.domains; d++) {
      receivers.push(new Receiver(d, domains[d]!, mine[d]![0]!.member));
      for (const m of mine[d]!.slice(1, 1 + samplesPerDomain)) samples.push({ ...m, lastSeq: 0n });
    }
    const extra = Math.max(0, online - c.domains);
    for (let k = 0, added = 0; added < extra; k++) {
      const d = k % c.domains;
      const m = mine[d]![1 + samplesPerDomain + Math.floor(k / c.domains)];
      if (m === undefined) {
        if (mine.every((x) => x.length <= 1 + samplesPerDomain + Math.floor(k / c.domains))) break;
        continue;
      }
      receivers.push(new Receiver(receivers.length, domains[d]!, m.member));
      added++;
    }

    // Online recipients stream over connections of RECEIVERS_PER_CONNECTION each, under
    // the DS's default limit of streaming calls per connection (--max-streams-per-connection 16),
    // as devices with connections of their own would.
    const receiverTransports: DSTransport[] = [];
    const byDomain = domains.map((_, d) => receivers.filter((r) => r.domain === domains[d]));
    for (let d = 0; d < c.domains; d++) {
      for (let k = 0; k < byDomain[d]!.length; k += RECEIVERS_PER_CONNECTION) {
        const transport = createDSTransport({ baseUrl: fed.nodes[d]!.server.url, ca: fed.ca });
        receiverTransports.push(transport);
        for (const r of byDomain[d]!.slice(k, k + RECEIVERS_PER_CONNECTION)) r.local = new LocalClientApi(transport, r.member.local!.identity);
      }
    }

    const groupId = await sender.createGroup(await hubSender(senderDs));
    const batch = c.members > 2000 ? BIG_ADD_BATCH : ADD_BATCH;
    let addCommits = 0;
    for (let k = 0; k < members.length; k += batch) {
      const ids = members.slice(k, k + batch).map((m) => m.member.clientId);
      const tb = performance.now();
      // KeyPackages through the hub (which asks the guests for theirs), then one commit adding them all.
      await sender.addClients(ids);
      addCommits++;
      log(`  add_clients commit ${addCommits}: ${ids.length} members (${((performance.now() - tb) / 1000).toFixed(1)} s)`);
    }
    // Every guest has stored what the build sent it.
    await fed.guestsCaughtUp();
    return { fed, sender, senderDs, senderTransport, receiverTransports, members, receivers, samples, membersPerDomain: perDomain, addCommits, groupId };
  } catch (err) {
    await fed.close();
    throw err;
  }
}

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
  const b = await build(c, o.samples, o.online, o.logLevel, o.serverNodeArgs);
  const { fed, sender, senderDs, receivers } = b;
  const checks: string[] = [];
  const D = c.domains;
  const perDomainSlots = receivers.slice(0, D).map((r) => r.slot);
  const allSlots = receivers.map((r) => r.slot);
  const guests = fed.nodes.slice(1);
  const feeds = guests.map(() => guestFeedId(fed.hub.domain, b.groupId));
  try {
    const buildS = (performance.now() - tb) / 1000;
    log(`  built in ${buildS.toFixed(1)} s; ${receivers.length} online recipients in the online phase`);
    const probe = await sender.prepareSend(new Uint8Array(MESSAGE_BYTES));
    const overhead = encodeMLSMessage(probe.message).length - MESSAGE_BYTES;
    sender.state = probe.newState;
    const readers = new Set([...receivers.map((r) => r.member.clientId), ...b.samples.map((s) => s.member.clientId)]);
    const quietGuests = b.members.filter((m) => m.d > 0 && !readers.has(m.member.clientId));

    // One warm-up message (JIT, connections, statements), checked like the others but not timed.
    {
      const w = await prepareMessages(sender, 1, overhead);
      const tracker = new RunTracker(w.messages, receivers.length);
      for (const r of receivers) r.tracker = tracker;
      await submitOk(senderDs, w.requests[0]!);
      await fed.guestsCaughtUp();
      for (const r of receivers) r.start();
      await tracker.waitDistinct(allSlots, 1);
      for (const r of receivers) await r.stop();
      for (const s of b.samples) s.lastSeq = await readBack(s.member, s.lastSeq, tracker, tracker.order[0]!);
    }

    const reps: FedRep[] = [];
    for (let rep = 0; rep < o.reps; rep++) {
      const M = o.messages;
      const K = o.sequential;
      const { requests, messages } = await prepareMessages(sender, M + K + M, overhead);
      const tracker = new RunTracker(messages, receivers.length);
      for (const r of receivers) r.tracker = tracker;
      const feedBefore = await Promise.all(guests.map(async (g, k) => (await g.store.queueInfo(`feed:${feeds[k]}`)).lastSeq));
      const cursorsBefore = await Promise.all(quietGuests.map(async (m) => cursorOf(fed.nodes[m.d]!.store, m.member.clientId, feeds[m.d - 1]!)));

      const pipelined = async (from: number, to: number): Promise<number> => {
        let next = from;
        await Promise.all(
          Array.from({ length: o.concurrency }, async () => {
            for (let i = next++; i < to; i = next++) await submitOk(senderDs, requests[i]!);
          }),
        );
        return performance.now();
      };

      // ---- into the stores (no stream open)
      const stores = async (): Promise<StoresResult> => {
        const rows0 = fed.rows();
        // The window starts with every store checkpointed (earlier phases' WAL pages are not its writes)
        // and ends with a checkpoint counted as the process's (this window's pages copied once).
        fed.checkpoint();
        const s0 = await fed.snapshot();
        const acceptedAt = await pipelined(0, M);
        const domainDone = await fed.guestsCaughtUp();
        const done = Math.max(acceptedAt, ...Object.values(domainDone));
        await sleep(SETTLE_MS); // the guests' acknowledgements, the last group commits
        const s1 = await fed.snapshot();
        const checkpointed = fed.checkpoint();
        const rows1 = fed.rows();
        const domainDoneMs: Record<string, number> = {};
        for (const [d, t] of Object.entries(domainDone)) domainDoneMs[d] = t - s0.t;
        const processes = fed.deltas(s0, s1, rows0, rows1).map((p, i) => ({ ...p, writeBytes: p.writeBytes + checkpointed[i]! }));
        // Measured while the servers are idle, on the same disk (their temp root).
        const floorKBPerMsg = processes.map((p) => storeFloorKBPerMessage(fed.root, M, p.transactions, MESSAGE_BYTES));
        return { count: M, elapsedMs: done - s0.t, acceptedMs: acceptedAt - s0.t, domainDoneMs, processes, floorKBPerMsg, benchCpuMs: s1.benchCpu - s0.benchCpu };
      };
      const ping = async (): Promise<PhaseResult> => {
        const s0 = await fed.snapshot();
        let next = 0;
        await Promise.all(
          Array.from({ length: o.concurrency }, async () => {
            for (let i = next++; i < M; i = next++) await senderDs.hub.ping({});
          }),
        );
        const done = performance.now();
        await sleep(SETTLE_MS);
        const s1 = await fed.snapshot();
        return { count: M, elapsedMs: done - s0.t, processes: fed.deltas(s0, s1), benchCpuMs: s1.benchCpu - s0.benchCpu };
      };
      // Alternate the order so that neither always runs on a warmer (or busier) process.
      let st: StoresResult;
      let q: PhaseResult;
      if (rep % 2 === 0) {
        q = await ping();
        st = await stores();
      } else {
        st = await stores();
        q = await ping();
      }

      // ---- one at a time: each message sent when the previous one is in every guest store and at every domain's recipient
      for (const d of perDomainSlots) receivers[d]!.start();
      await tracker.waitDistinct(perDomainSlots, M); // catching up, untimed
      const seqS0 = await fed.snapshot();
      const submitMs: number[] = [];
      const storeLatencyMs: Record<string, number[]> = Object.fromEntries(guests.map((g) => [g.domain, []]));
      const clientLatencyMs: Record<string, number[]> = Object.fromEntries(receivers.slice(0, D).map((r) => [r.domain, []]));
      const lastStoreMs: number[] = [];
      const lastClientMs: number[] = [];
      let targets = await fed.outboxHeads();
      for (let i = M; i < M + K; i++) {
        const t0 = performance.now();
        await submitOk(senderDs, requests[i]!);
        submitMs.push(performance.now() - t0);
        targets = targets.map((x) => x + 1n); // one outbox entry per guest domain and message
        const at = await fed.waitStored(targets);
        let lastStore = 0;
        guests.forEach((g, k) => {
          storeLatencyMs[g.domain]!.push(at[k]! - t0);
          lastStore = Math.max(lastStore, at[k]! - t0);
        });
        lastStoreMs.push(lastStore);
        await tracker.waitMessage(perDomainSlots, i);
        let lastClient = 0;
        for (const r of receivers.slice(0, D)) {
          const l = tracker.arrivals[r.slot]![i]! - t0;
          clientLatencyMs[r.domain]!.push(l);
          lastClient = Math.max(lastClient, l);
        }
        lastClientMs.push(lastClient);
      }
      const seqElapsed = performance.now() - seqS0.t;
      await sleep(SETTLE_MS);
      const seqS1 = await fed.snapshot();
      const sequential: SequentialResult = {
        count: K,
        elapsedMs: seqElapsed,
        processes: fed.deltas(seqS0, seqS1),
        benchCpuMs: seqS1.benchCpu - seqS0.benchCpu,
        submitMs,
        storeLatencyMs,
        lastStoreMs,
        clientLatencyMs,
        lastClientMs,
      };

      // ---- online: every online recipient's stream open (caught up first, untimed), M more messages
      for (const r of receivers) r.start();
      await tracker.waitDistinct(allSlots, M + K);
      const onS0 = await fed.snapshot();
      await pipelined(M + K, M + K + M);
      await tracker.waitDistinct(allSlots, M + K + M);
      const onDone = performance.now();
      await sleep(SETTLE_MS);
      const onS1 = await fed.snapshot();
      for (const r of receivers) await r.stop();
      const online: OnlineResult = {
        count: M,
        elapsedMs: onDone - onS0.t,
        processes: fed.deltas(onS0, onS1),
        benchCpuMs: onS1.benchCpu - onS0.benchCpu,
        recipients: receivers.length,
        delivered: M * receivers.length,
      };

      // ---- delivery checks
      const n = messages.length;
      const order = tracker.order[0]!;
      for (const r of receivers) {
        if (r.errors.length > 0) throw new Error(`receiver ${r.member.clientId}: ${r.errors.join("; ")}`);
        const dup = tracker.counts[r.slot]!.findIndex((x) => x !== 1);
        if (dup >= 0) throw new Error(`receiver ${r.member.clientId} got message ${dup} ${tracker.counts[r.slot]![dup]} times`);
        const ord = tracker.order[r.slot]!;
        if (ord.length !== n || ord.some((x, k) => x !== order[k])) throw new Error(`receiver ${r.member.clientId}: another order than ${receivers[0]!.member.clientId}`);
      }
      if (order.slice(M, M + K).some((x, k) => x !== M + k)) throw new Error("the one-at-a-time messages arrived in another order than sent");
      await pool(b.samples, 8, async (s) => {
        s.lastSeq = await readBack(s.member, s.lastSeq, tracker, order);
      });
      const feedAfter = await Promise.all(guests.map(async (g, k) => (await g.store.queueInfo(`feed:${feeds[k]}`)).lastSeq));
      guests.forEach((g, k) => {
        if (feedAfter[k]! - feedBefore[k]! !== BigInt(n)) throw new Error(`${g.domain}: its feed got ${feedAfter[k]! - feedBefore[k]!} entries for ${n} messages`);
      });
      const cursorsAfter = await Promise.all(quietGuests.map(async (m) => cursorOf(fed.nodes[m.d]!.store, m.member.clientId, feeds[m.d - 1]!)));
      quietGuests.forEach((m, k) => {
        const a = cursorsBefore[k]!;
        const z = cursorsAfter[k]!;
        if (a === undefined || z === undefined || z.cursor !== a.cursor || z.head - a.head !== BigInt(n) || z.until !== undefined)
          throw new Error(`${m.member.clientId}: its feed membership does not hold exactly the ${n} messages (${JSON.stringify({ before: a, after: z }, (_, v) => (typeof v === "bigint" ? v.toString() : v))})`);
      });
      if (rep === 0) {
        checks.push(
          `${receivers.length} online recipients (${D} of them also one at a time): each of the ${n} messages exactly once, all in the same order, one-at-a-time ones in send order`,
          `${b.samples.length} more members (${o.samples} per domain) read back through Receive: every message once, in that order`,
          `guest feeds: exactly ${n} entries each; ${quietGuests.length} guest members not reading: exactly those ${n} pending for each (cursor unmoved, head + ${n})`,
        );
      }

      reps.push({ stores: st, ping: q, sequential, online });
      log(
        `  rep ${rep + 1}/${o.reps}: into the stores ${fmt((st.count * 1000) / st.elapsedMs)} msg/s (${o.concurrency} in flight); CPU ms/msg: hub ${fmt(st.processes[0]!.cpuMs / st.count)} (Ping ${fmt(q.processes[0]!.cpuMs / q.count)}), guests ${st.processes
          .slice(1)
          .map((d) => fmt(d.cpuMs / st.count))
          .join(" / ")}; one at a time ${fmt(median(lastStoreMs))} ms to the last store, ${fmt(median(lastClientMs))} ms to the last client; online (${receivers.length}) ${fmt((online.count * 1000) / online.elapsedMs)} msg/s, ${fmt(online.processes.reduce((a, p) => a + p.cpuMs, 0) / online.delivered, 3)} server CPU ms per delivery`,
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
    for (const t of b.receiverTransports) t.close();
    await fed.close();
  }
}

/** A member's place in a guest feed (Store.feedMemberships). */
async function cursorOf(store: Store, clientId: string, feed: string): Promise<{ cursor: bigint; head: bigint; until?: bigint } | undefined> {
  const m = (await store.feedMemberships(clientId)).find((x) => x.groupId === feed);
  return m === undefined ? undefined : { cursor: m.cursor, head: m.head, ...(m.until !== undefined ? { until: m.until } : {}) };
}

function summarize(reps: readonly FedRep[]): FedSummary {
  const per = (f: (r: FedRep) => number): number => median(reps.map(f));
  const domains = reps[0]!.stores.processes.length;
  const guestIdx = Array.from({ length: domains - 1 }, (_, k) => k + 1);
  const rowsOf = (d: ProcessDelta): number => Object.values(d.rows).reduce((a, b) => a + b, 0);
  const cpuAll = (p: PhaseResult): number => p.processes.reduce((a, d) => a + d.cpuMs, 0);
  const lastStore = reps.flatMap((r) => r.sequential.lastStoreMs);
  const lastClient = reps.flatMap((r) => r.sequential.lastClientMs);
  return {
    e2eMsgsPerS: per((r) => (r.stores.count * 1000) / r.stores.elapsedMs),
    acceptedMsgsPerS: per((r) => (r.stores.count * 1000) / r.stores.acceptedMs),
    hubCpuMsPerMsg: per((r) => r.stores.processes[0]!.cpuMs / r.stores.count),
    hubCpuMsPerPing: per((r) => r.ping.processes[0]!.cpuMs / r.ping.count),
    hubCpuMsPerMsgSequential: per((r) => r.sequential.processes[0]!.cpuMs / r.sequential.count),
    guestCpuMsPerMsg: guestIdx.map((g) => per((r) => r.stores.processes[g]!.cpuMs / r.stores.count)),
    hubRowsPerMsg: per((r) => rowsOf(r.stores.processes[0]!) / r.stores.count),
    guestRowsPerMsg: guestIdx.map((g) => per((r) => rowsOf(r.stores.processes[g]!) / r.stores.count)),
    hubWriteKBPerMsg: per((r) => r.stores.processes[0]!.writeBytes / 1024 / r.stores.count),
    guestWriteKBPerMsg: guestIdx.map((g) => per((r) => r.stores.processes[g]!.writeBytes / 1024 / r.stores.count)),
    hubMsgsPerTransaction: per((r) => r.stores.count / r.stores.processes[0]!.transactions),
    guestMsgsPerTransaction: guestIdx.map((g) => per((r) => r.stores.count / r.stores.processes[g]!.transactions)),
    hubFloorKBPerMsg: per((r) => r.stores.floorKBPerMsg[0]!),
    guestFloorKBPerMsg: guestIdx.map((g) => per((r) => r.stores.floorKBPerMsg[g]!)),
    benchCpuMsPerMsg: per((r) => r.stores.benchCpuMs / r.stores.count),
    allCpuMsPerMsg: per((r) => (r.stores.benchCpuMs + cpuAll(r.stores)) / r.stores.count),
    pingsPerS: per((r) => (r.ping.count * 1000) / r.ping.elapsedMs),
    storeLatencyP50Ms: quantile(lastStore, 0.5),
    storeLatencyP99Ms: quantile(lastStore, 0.99),
    clientLatencyP50Ms: quantile(lastClient, 0.5),
    clientLatencyP99Ms: quantile(lastClient, 0.99),
    submitP50Ms: quantile(
      reps.flatMap((r) => r.sequential.submitMs),
      0.5,
    ),
    onlineRecipients: reps[0]!.online.recipients,
    onlineMsgsPerS: per((r) => (r.online.count * 1000) / r.online.elapsedMs),
    onlineDeliveriesPerS: per((r) => (r.online.delivered * 1000) / r.online.elapsedMs),
    onlineServerCpuMsPerDelivery: per((r) => cpuAll(r.online) / r.online.delivered),
    onlineHubCpuMsPerMsg: per((r) => r.online.processes[0]!.cpuMs / r.online.count),
    onlineGuestCpuMsPerMsg: guestIdx.map((g) => per((r) => r.online.processes[g]!.cpuMs / r.online.count)),
    onlineBenchCpuMsPerDelivery: per((r) => r.online.benchCpuMs / r.online.delivered),
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
    online: o.online ?? 1000,
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
    `Federation: 1 KB application messages to a group spread over domains (hub a.bench; ${r.reps} reps of ${r.messages} messages into the stores with ${r.concurrency} in flight, ${r.sequential} one at a time, ${r.messages} to ${r.online} online recipients; medians; CPU = utime+stime of each process)`,
    "",
    "Into the guests' stores (no stream open; targets at 1,000 x 3: >= 500 msg/s, hub and guest CPU <= 1.5 ms/msg, 100 x 3 and 10,000 x 3 within 2x)",
    "members x domains | per domain  | msg/s into stores | accepted/s | hub CPU ms/msg | hub CPU ms/Ping | guest CPU ms/msg | hub ms/msg one at a time",
  ];
  for (const c of r.configs) {
    const s = c.summary;
    lines.push(
      [
        name(c),
        c.membersPerDomain.join("/").padEnd(11),
        fmt(s.e2eMsgsPerS).padStart(17),
        fmt(s.acceptedMsgsPerS).padStart(10),
        fmt(s.hubCpuMsPerMsg).padStart(14),
        fmt(s.hubCpuMsPerPing).padStart(15),
        s.guestCpuMsPerMsg.map((x) => fmt(x)).join(" / ").padStart(16),
        fmt(s.hubCpuMsPerMsgSequential).padStart(24),
      ].join(" | "),
    );
  }
  lines.push("", "Writes per message into the stores (targets: guest <= 5 KB, hub <= 10 KB), latency one at a time (target: last domain <= 30 ms p99)");
  lines.push("members x domains | hub rows/msg | hub KB written/msg | guest rows/msg | guest KB written/msg | to last store p50 / p99 ms | to last client p50 / p99 ms | all processes CPU ms/msg | Ping/s");
  for (const c of r.configs) {
    const s = c.summary;
    lines.push(
      [
        name(c),
        fmt(s.hubRowsPerMsg).padStart(12),
        fmt(s.hubWriteKBPerMsg).padStart(18),
        s.guestRowsPerMsg.map((x) => fmt(x)).join(" / ").padStart(14),
        s.guestWriteKBPerMsg.map((x) => fmt(x)).join(" / ").padStart(20),
        `${fmt(s.storeLatencyP50Ms)} / ${fmt(s.storeLatencyP99Ms)}`.padStart(26),
        `${fmt(s.clientLatencyP50Ms)} / ${fmt(s.clientLatencyP99Ms)}`.padStart(27),
        fmt(s.allCpuMsPerMsg).padStart(24),
        fmt(s.pingsPerS),
      ].join(" | "),
    );
  }
  lines.push(
    "",
    "Against the storage floor (bench/storefloor.ts: one 1 KB row per message, in as many SQLite transactions as the process made, same settings and disk)",
  );
  lines.push("members x domains | hub msgs/transaction | hub floor KB/msg | hub KB / floor | guest msgs/transaction | guest floor KB/msg | guest KB / floor");
  for (const c of r.configs) {
    const s = c.summary;
    lines.push(
      [
        name(c),
        fmt(s.hubMsgsPerTransaction).padStart(20),
        fmt(s.hubFloorKBPerMsg).padStart(16),
        fmt(s.hubWriteKBPerMsg / s.hubFloorKBPerMsg).padStart(14),
        s.guestMsgsPerTransaction.map((x) => fmt(x)).join(" / ").padStart(22),
        s.guestFloorKBPerMsg.map((x) => fmt(x)).join(" / ").padStart(18),
        s.guestWriteKBPerMsg.map((x, k) => fmt(x / s.guestFloorKBPerMsg[k]!)).join(" / ").padStart(16),
      ].join(" | "),
    );
  }
  lines.push("", "To online recipients (Receive streams open, spread over the domains)");
  lines.push("members x domains | online | msg/s | deliveries/s | server CPU ms/delivery | hub CPU ms/msg | guest CPU ms/msg | load generator CPU ms/delivery");
  for (const c of r.configs) {
    const s = c.summary;
    lines.push(
      [
        name(c),
        String(s.onlineRecipients).padStart(6),
        fmt(s.onlineMsgsPerS).padStart(5),
        fmt(s.onlineDeliveriesPerS).padStart(12),
        fmt(s.onlineServerCpuMsPerDelivery, 3).padStart(22),
        fmt(s.onlineHubCpuMsPerMsg).padStart(14),
        s.onlineGuestCpuMsPerMsg.map((x) => fmt(x)).join(" / ").padStart(16),
        fmt(s.onlineBenchCpuMsPerDelivery, 3).padStart(30),
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
  if (num("online") !== undefined) o.online = num("online");
  if (val("fed-log-level") !== undefined) o.logLevel = val("fed-log-level");
  if (val("fed-server-node-args") !== undefined) o.serverNodeArgs = val("fed-server-node-args")!.split(" ");
  return o;
}

// Standalone: node dist/bench/federation.js [options]
if (process.argv[1] !== undefined && /bench[/\\]federation\.[jt]s$/.test(process.argv[1])) {
  const r = await runFederationBench(parseFederationArgs(process.argv.slice(2)));
  console.log(federationTable(r));
}
