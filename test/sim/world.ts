// The world of the fault simulation: real `serve` processes (one per domain,
// SQLite stores, TLS and mutual TLS between them), real ts-mls clients of
// each domain talking only to their own DS (requests for groups hosted
// elsewhere are proxied), and a model of what the hubs must have accepted:
// every group's members and epoch, every pending proposal, and every message
// each client must receive, in the hub's order. The invariants are checked
// against the model and against the servers themselves (docs/testing.md).
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { reservedPort } from "../helpers/ports.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import type { ExternalSender } from "ts-mls";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { createDSTransport, DSClient, DSRequestError, MimiMember, type DSTransport } from "../../src/client/index.js";
import { HubIdentity } from "../../src/ds/hub-identity.js";
import { decodeMLSMessage, decodeWith, DSErrorCode, dsErrorCodeName, externalSenderCodec, mlsMessageGroupId } from "../../src/wire/index.js";
import { groupKey } from "../../src/ds/groups.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

// ---------------------------------------------------------------- randomness and the trace

/** sfc32: a small seeded PRNG, so a seed gives the same sequence of operations. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.next();
  }
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error("pick from nothing");
    return xs[this.int(xs.length)]!;
  }
  /** Up to `n` distinct elements. */
  some<T>(xs: readonly T[], n: number): T[] {
    const pool = [...xs];
    const out: T[] = [];
    while (out.length < n && pool.length > 0) out.push(pool.splice(this.int(pool.length), 1)[0]!);
    return out;
  }
}

/** A failed invariant: the message says what, the world adds the seed and the trace. */
export class SimFailure extends Error {
  override readonly name = "SimFailure";
}

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new SimFailure(message);
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
export const groupName = (id: Uint8Array): string => Buffer.from(id).toString("utf8").replace(/^(.{6}).*@/, "$1…@");

// ---------------------------------------------------------------- domains

/** One DS: its serve process (restartable on the same port and data), a client-facing transport and the operator's AdminService. */
export class SimDomain {
  server: ServeProcess | undefined;
  transport!: DSTransport;
  ds!: DSClient;
  admin!: Client<typeof AdminService>;
  private adminTransport!: DSTransport;
  /** Log lines already checked for errors. */
  private seenLines = 0;

  constructor(
    readonly name: string,
    readonly port: number,
    readonly dataDir: string,
    private readonly world: SimWorld,
  ) {}

  get up(): boolean {
    return this.server !== undefined && this.server.child.exitCode === null && this.server.child.signalCode === null;
  }

  get url(): string {
    return `https://localhost:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = await spawnServe({
      domain: this.name,
      dataDir: this.dataDir,
      certsDir: this.world.ca.dir,
      args: ["--listen", `127.0.0.1:${this.port}`, "--peers", join(this.world.root, `${this.name}.peers.json`), ...this.world.serveArgs],
    });
    this.seenLines = 0;
    if (this.transport === undefined) {
      this.transport = createDSTransport({ baseUrl: this.url, ca: this.world.ca.ca, interceptors: [this.world.captureCreates] });
      this.ds = new DSClient(this.transport);
      const op = this.world.ca.domain(this.name);
      this.adminTransport = createDSTransport({ baseUrl: this.url, ca: this.world.ca.ca, cert: op.cert, key: op.key });
      this.admin = createClient(AdminService, this.adminTransport);
    }
  }

  /** SIGKILL: a crash, nothing drained. */
  async crash(): Promise<void> {
    this.checkLog();
    await this.server?.crash();
  }

  /** Lines the server logged at error level or above since the last look (none is allowed). */
  checkLog(): void {
    const lines = this.server?.lines ?? [];
    for (; this.seenLines < lines.length; this.seenLines++) {
      const l = lines[this.seenLines]!;
      check(typeof l.level !== "number" || l.level < 50, `${this.name} logged an error: ${JSON.stringify(l).slice(0, 600)}`);
    }
  }

  close(): void {
    this.transport?.close();
    this.adminTransport?.close();
  }
}

// ---------------------------------------------------------------- clients

/** What a client must find next in its queue. */
export interface Expected {
  readonly kind: "joined" | "commit" | "proposal" | "application" | "stale" | "removed";
  readonly group: string;
  readonly text?: string;
  /** Sent while a server was being killed: the outcome is unknown, so it may be missing (never doubled). */
  readonly maybe?: boolean;
  /** The step that caused it (for the trace). */
  readonly step: number;
}

/** One client of one domain, with one group at a time (MimiMember holds one group state). */
export class SimClient {
  /** The group it belongs to as the hub sees it (member, or added and not yet joined). */
  group: string | undefined;
  /** Removed by the hub (or left a closed group) but its queue still holds what leads there. */
  leaving = false;
  /** Until this step it does not read its queue (so Welcomes are fetched at old epochs). */
  lazyUntil = 0;
  readonly expected: Expected[] = [];
  private readonly received: { seq: bigint; bytes: Uint8Array }[] = [];
  private lastSeen = 0n;
  private acked = 0n;
  private readonly abort = new AbortController();
  private pumping: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** Groups whose Welcome came after the group was deleted: their messages are dropped, as a real client would. */
  private readonly ignoredGroups = new Set<string>();
  /** A broken stream invariant seen by the reader (gap or repeat of sequence numbers). */
  private failure: SimFailure | undefined;

  constructor(
    readonly name: string,
    readonly domain: SimDomain,
    readonly member: MimiMember,
  ) {}

  get id(): string {
    return this.member.clientId;
  }

  /** Keeps a Receive stream to its own DS open, resuming after the last entry seen (across restarts). */
  startInbox(): void {
    const loop = async () => {
      while (!this.abort.signal.aborted) {
        try {
          for await (const m of this.member.local!.receive(this.lastSeen, this.abort.signal)) {
            if (m.sequence !== this.lastSeen + 1n) {
              this.failure ??= new SimFailure(`${this.id}: queue sequence ${m.sequence} after ${this.lastSeen} (gap or repeat)`);
              return;
            }
            this.lastSeen = m.sequence;
            this.received.push({ seq: m.sequence, bytes: m.mlsMessage });
            this.wake?.();
          }
        } catch {
          if (this.abort.signal.aborted) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    this.pumping = loop();
    this.pumping.catch(() => undefined);
  }

  get definiteExpected(): number {
    return this.expected.filter((e) => e.maybe !== true).length;
  }

  /**
   * Reads and processes the queue until every definite expected entry came,
   * in order; `maybe` entries may be missing. Anything else (another kind,
   * another text, a repeat) fails. Returns what was processed.
   */
  // Delivery after a hub restart waits for the guest's reconnect backoff (at most 10 s): the bound is generous.
  async catchUp(world: SimWorld, timeoutMs = 45_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let done = 0;
    while (this.expected.some((e) => e.maybe !== true)) {
      if (this.failure !== undefined) throw this.failure;
      if (this.received.length === 0) {
        check(Date.now() < deadline, `${this.id}: waited ${timeoutMs} ms for ${this.definiteExpected} more queue entries (next: ${JSON.stringify(this.expected[0])}); got ${done}`);
        await new Promise<void>((r) => {
          this.wake = r;
          setTimeout(r, 50);
        });
        continue;
      }
      const entry = this.received.shift()!;
      const msg = decodeMLSMessage(entry.bytes);
      const gid = mlsMessageGroupId(msg);
      let got: Expected["kind"];
      let text: string | undefined;
      if (gid !== undefined && this.ignoredGroups.has(groupKey(gid))) {
        // A group this client could not join (deleted before it fetched its tree): a real client drops its messages.
        got = this.expected[0]?.kind ?? "commit";
        text = this.expected[0]?.text;
        check(this.expected[0]?.group === groupKey(gid), `${this.id}: queue entry ${entry.seq} is for ${groupKey(gid)}, expected ${JSON.stringify(this.expected[0])}`);
      } else {
        let result;
        try {
          result = await this.member.processIncoming(msg);
        } catch (err) {
          const next = this.expected[0];
          const gone = next?.kind === "joined" && world.groupByKey(next.group)?.deleted === true && err instanceof DSRequestError && err.code === DSErrorCode.unknown_group;
          if (!gone) throw new SimFailure(`${this.id}: processing queue entry ${entry.seq} (expected ${JSON.stringify(next)}) failed: ${(err as Error).message}`);
          this.ignoredGroups.add(next.group);
          result = { kind: "joined" as const, epoch: 0n };
        }
        got = result.kind === "commit" && result.removed ? "removed" : result.kind;
        text = result.kind === "application" ? result.text : undefined;
      }
      // Skip `maybe` entries that did not come.
      while (this.expected[0]?.maybe === true && !(this.expected[0].kind === got && this.expected[0].text === text)) this.expected.shift();
      const want = this.expected.shift();
      check(want !== undefined, `${this.id}: unexpected ${got}${text !== undefined ? ` "${text}"` : ""} at queue entry ${entry.seq}`);
      check(want.kind === got && want.text === text, `${this.id}: queue entry ${entry.seq} is ${got}${text !== undefined ? ` "${text}"` : ""}, expected ${want.kind}${want.text !== undefined ? ` "${want.text}"` : ""} (from step ${want.step})`);
      world.delivered++;
      done++;
      this.acked = entry.seq;
    }
    while (this.expected[0]?.maybe === true && this.received.length === 0) this.expected.shift();
    if (this.acked > 0n) await this.member.local!.acknowledge(this.acked).catch(() => undefined);
    return done;
  }

  /** Nothing is left that was not expected. */
  async expectQuiet(ms: number): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    check(this.received.length === 0, `${this.id}: ${this.received.length} unexpected queue entries at the end`);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.pumping?.catch(() => undefined);
  }
}

// ---------------------------------------------------------------- groups (the model)

export interface PendingProposal {
  readonly kind: "remove" | "add";
  /** The client the proposal removes or adds. */
  readonly target: string;
  /** Member self-remove, or the hub's own. */
  readonly by: "member" | "hub";
}

export class SimGroup {
  epoch = 0n;
  /** Client names, as the hub sees the membership (joiners included). */
  readonly members = new Set<string>();
  readonly pending: PendingProposal[] = [];
  closed = false;
  deleted = false;
  /** Created with external_join_policy open (else only resyncs join by external commit). */
  openJoins = false;
  /** The create_group request as sent (an attacker replays it after the delete). */
  createRequest: Uint8Array | undefined;
  /** SHA-256 of the hub's GroupContext at the epochs it was seen, to compare with the hub's rebuilt history. */
  readonly contexts = new Map<bigint, string>();

  constructor(
    readonly id: Uint8Array,
    readonly key: string,
    readonly hub: SimDomain,
  ) {}

  get name(): string {
    return groupName(this.id);
  }
}

// ---------------------------------------------------------------- the world

export interface WorldOptions {
  readonly domains: readonly string[];
  readonly clientsPerDomain: number;
  /** Extra serve flags (cache size, snapshot interval). */
  readonly serveArgs: readonly string[];
}

export class SimWorld {
  readonly domains = new Map<string, SimDomain>();
  readonly clients: SimClient[] = [];
  readonly groups: SimGroup[] = [];
  readonly trace: string[] = [];
  step = 0;
  /** Queue entries processed as expected (a figure for the report). */
  delivered = 0;
  readonly counts = new Map<string, number>();
  /** Clients a pending hub Add names (not free, not yet members). */
  readonly reserved = new Set<string>();
  /** Domains killed and left down, with the step they come back at. */
  readonly downUntil = new Map<string, number>();
  /** The last create_group DSRequest sent through any domain (an attacker replays it later). */
  lastCreateRequest: Uint8Array | undefined;
  readonly captureCreates: Interceptor = (next) => async (req) => {
    const m = req.message as { dsRequest?: Uint8Array };
    // DSRequest: uint16 version, uint8 request_type (create_group = 9).
    if (req.method.name === "Submit" && m.dsRequest instanceof Uint8Array && m.dsRequest[2] === 9) this.lastCreateRequest = m.dsRequest.slice();
    return next(req);
  };

  private constructor(
    readonly rng: Rng,
    readonly ca: DevCa,
    readonly root: string,
    readonly serveArgs: readonly string[],
  ) {}

  static async create(seed: number, o: WorldOptions): Promise<SimWorld> {
    const ca = await makeDevCa(o.domains);
    const root = await mkdtemp(join(tmpdir(), "mimi-ds-sim-"));
    const w = new SimWorld(new Rng(seed), ca, root, o.serveArgs);
    const keys = new Map<string, Uint8Array>();
    for (const d of o.domains) {
      const dataDir = join(root, d);
      // The hub key file is made first so every peer can be told the fanout key.
      keys.set(d, (await HubIdentity.open(d, join(dataDir, "hub-keys.json"))).fanoutPublicKey);
      w.domains.set(d, new SimDomain(d, await reservedPort(), dataDir, w));
    }
    for (const n of w.domains.values()) {
      const peers = [...w.domains.values()]
        .filter((p) => p !== n)
        .map((p) => ({ domain: p.name, endpoint: p.url, ca: ca.caPath, dsSignatureKey: Buffer.from(keys.get(p.name)!).toString("base64") }));
      await writeFile(join(root, `${n.name}.peers.json`), JSON.stringify(peers, null, 2));
    }
    await Promise.all([...w.domains.values()].map((d) => d.start()));
    for (const d of w.domains.values()) {
      for (let i = 0; i < o.clientsPerDomain; i++) {
        const member = await MimiMember.create({ clientId: `mimi://${d.name}/u/c${i}/d/1`, hub: d.ds, local: d.transport });
        await member.register();
        await member.publishKeyPackages(3, { lastResort: true });
        const c = new SimClient(`${d.name.split(".")[0]}${i}`, d, member);
        c.startInbox();
        w.clients.push(c);
      }
    }
    return w;
  }

  log(line: string): void {
    this.trace.push(`${this.step}: ${line}`);
  }

  count(what: string): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1);
  }

  client(name: string): SimClient {
    const c = this.clients.find((x) => x.name === name);
    if (c === undefined) throw new Error(`no client ${name}`);
    return c;
  }

  /** Everyone in `names` but `except` must find `e` next in their queue. */
  expect(names: Iterable<string>, e: Omit<Expected, "step">, except: readonly string[] = []): void {
    for (const n of names) if (!except.includes(n)) this.client(n).expected.push({ ...e, step: this.step });
  }

  groupByKey(key: string): SimGroup | undefined {
    return this.groups.find((g) => g.key === key);
  }

  liveGroups(): SimGroup[] {
    return this.groups.filter((g) => !g.deleted);
  }

  /** Whether everything a request about `g` by `c` touches is running (its DS, the hub). */
  reachable(c: SimClient, g?: SimGroup): boolean {
    return c.domain.up && (g === undefined || g.hub.up);
  }

  /**
   * A DS request that may fail only with the codes listed; any other failure
   * (internal, unavailable, group_state_lost, ...) breaks the invariant.
   */
  async request<T>(what: string, f: () => Promise<T>, allowed: readonly number[] = []): Promise<{ ok: true; value: T } | { ok: false; code: number }> {
    try {
      return { ok: true, value: await f() };
    } catch (err) {
      if (err instanceof DSRequestError && allowed.includes(err.code)) return { ok: false, code: err.code };
      if (err instanceof SimFailure) throw err;
      const code = err instanceof DSRequestError ? `${err.codeName}: ${err.dsMessage}` : (err as Error).message;
      throw new SimFailure(`${what} failed: ${code}`);
    }
  }

  async hubSender(d: SimDomain): Promise<ExternalSender> {
    const info = await d.ds.hub.hubInfo({ cipherSuite: 1 });
    return decodeWith(externalSenderCodec, info.externalSender, "ExternalSender");
  }

  // ------------------------------------------------------------ invariants

  /**
   * After every step: every client whose DS is up has read what it must (in
   * order, exactly once); every member's epoch and GroupContext equal its
   * hub's; each hub's group in memory equals the group rebuilt from its store,
   * and every epoch kept for joiners rebuilds to the GroupContext seen live;
   * no server logged an error.
   */
  async checkInvariants(): Promise<void> {
    for (const c of this.clients) {
      if (!c.domain.up || c.lazyUntil > this.step) continue;
      // What a hub that is down has not streamed yet (and the tree a Welcome needs) waits for it.
      if (c.expected.some((e) => this.groupByKey(e.group)?.hub.up === false)) continue;
      // A client whose messages come from a hub that is down waits for it.
      await c.catchUp(this);
      if (c.leaving) {
        c.leaving = false;
        c.group = undefined;
      }
    }
    for (const g of this.liveGroups()) {
      if (!g.hub.up) continue;
      const info = await this.request(`external_commit_info of ${g.name}`, () => g.hub.ds.externalCommitInfo(g.id));
      if (!info.ok) continue;
      check(info.value.groupInfo.wireformat === "mls_group_info", `${g.name}: external_commit_info without a GroupInfo`);
      const gc = info.value.groupInfo.groupInfo.groupContext;
      check(gc.epoch === g.epoch, `${g.name}: the hub is at epoch ${gc.epoch}, the model at ${g.epoch}`);
      const hubGc = sha(encodeGroupContext(gc));
      g.contexts.set(gc.epoch, hubGc);
      for (const name of g.members) {
        const c = this.client(name);
        if (!c.domain.up || c.lazyUntil > this.step || c.member.state === undefined || c.group !== g.key || c.expected.length > 0) continue;
        check(c.member.epoch === gc.epoch, `${c.id}: at epoch ${c.member.epoch}, its hub ${g.hub.name} at ${gc.epoch} (${g.name})`);
        check(sha(encodeGroupContext(c.member.state.groupContext)) === hubGc, `${c.id}: its GroupContext of epoch ${gc.epoch} differs from the hub's (${g.name})`);
      }
      const v = await g.hub.admin.verifyGroup({ groupId: g.id });
      check(v.epoch === g.epoch, `${g.name}: VerifyGroup at epoch ${v.epoch}, the model at ${g.epoch}`);
      if (v.liveStateSha256.length > 0)
        check(hex(v.liveStateSha256) === hex(v.rebuiltStateSha256), `${g.name}: the state in memory differs from the state rebuilt from the store at epoch ${v.epoch}`);
      for (const h of v.history) {
        const seen = g.contexts.get(h.epoch);
        if (seen !== undefined) check(hex(h.groupContextSha256) === seen, `${g.name}: epoch ${h.epoch} kept for joiners rebuilds to another GroupContext than the hub had`);
      }
    }
    for (const d of this.domains.values()) if (d.up) d.checkLog();
  }

  /** The end: nothing more arrives than was expected, and the servers stop cleanly. */
  async finish(): Promise<void> {
    for (const d of this.domains.values()) if (!d.up) await d.start();
    for (const c of this.clients) c.lazyUntil = 0;
    await this.checkInvariants();
    await Promise.all(this.clients.map((c) => c.expectQuiet(300)));
    for (const d of this.domains.values()) {
      d.checkLog();
      const exit = await d.server!.stop();
      check(exit.code === 0, `${d.name} exited with ${exit.code ?? exit.signal} on SIGTERM`);
    }
  }

  async close(): Promise<void> {
    for (const c of this.clients) await c.stop();
    for (const d of this.domains.values()) {
      d.close();
      if (d.up) await d.server!.crash();
    }
    await this.ca.cleanup();
    await rm(this.root, { recursive: true, force: true });
  }
}

export const codeName = (code: number): string => dsErrorCodeName(code) ?? String(code);
export { DSErrorCode, randomBytes };
