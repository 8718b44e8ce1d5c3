// Prometheus metrics (a prom-client Registry: exposition, default process
// metrics, scrape-time gauges): every series is listed, with what it counts,
// in docs/operations.md. The hot path pays one counter increment and one
// histogram observation per RPC, DSRequest and store call, on children of
// fast-metrics.ts looked up once per label set and kept: no allocation per
// call. What needs a read (queue backlogs, outboxes, hosted groups) is
// computed when Prometheus scrapes, and the expensive reads are cached.
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type Database from "better-sqlite3";
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { DSRequestHandler } from "../ds/handler.js";
import { outboxQueue, type Store } from "../store/port.js";
import { DSRequestType, dsErrorCodeName } from "../wire/index.js";
import { requestContextKey } from "./context.js";
import { FastCounter, FastHistogram, type CounterChild, type HistogramChild } from "./fast-metrics.js";
import { codeName } from "./logging.js";

const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const STORE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/** Scrape-time SQLite aggregates are reused for this long (they scan an index). */
const AGGREGATE_TTL_MS = 10_000;

/** Operations whose success is an accepted commit (the group's epoch advanced). */
const COMMIT_OPERATIONS = new Set(["delete_group", "add_clients", "remove_clients", "update_client", "external_join", "reinitialize_group"]);
const operationNames: string[] = [];
for (const [name, n] of Object.entries(DSRequestType)) operationNames[n] = name;
/** DSRequest = version (uint16) then request_type (uint8): the operation without decoding. */
const operationOf = (bytes: Uint8Array): string => (bytes.length >= 3 ? (operationNames[bytes[2]!] ?? "unknown") : "undecodable");

/** Store methods not timed: they wait for events, or end the store. */
const UNTIMED = new Set(["waitForAppend", "subscribe", "close"]);

/** What the scrape reads from the running DS; every source is optional. */
export interface MetricsSources {
  /** Groups parsed in this instance's memory, and their estimated bytes when known. */
  readonly groupCache?: () => { readonly groups: number; readonly bytes?: number };
  /** The SQLite reading connection: hosted groups and client queue backlogs. */
  readonly sqlite?: Database.Database;
  /** The store and the peer domains whose outboxes to report. */
  readonly outboxes?: { readonly store: Store; readonly peers: () => readonly string[] };
  /** Guest side: whether each hub's fanout stream is connected. */
  readonly hubs?: () => readonly { readonly hub: string; readonly connected: boolean }[];
}

interface Aggregates {
  at: number;
  groups: number;
  backlog: { entries: number; queues: number; maxDepth: number; oldest: number | undefined };
}

export class DSMetrics {
  readonly registry = new Registry();
  #sources: MetricsSources = {};
  #sourcesSet = false;
  #aggregates: Aggregates | undefined;
  /** Requests this DS forwarded to another hub (marked by the peer client): not counted as accepted here. */
  readonly #forwarded = new WeakMap<Uint8Array, string>();

  readonly rpcRequests: FastCounter;
  readonly rpcDuration: FastHistogram;
  readonly rpcStreams: Gauge<"service" | "method">;
  readonly fanoutStreams: Gauge<"guest">;
  readonly dsRequests: FastCounter;
  readonly dsForwarded: FastCounter;
  readonly commits: FastCounter;
  readonly messages: CounterChild;
  readonly rateLimitHits: FastCounter;
  readonly storeDuration: FastHistogram;
  readonly storeErrors: FastCounter;
  readonly groupCommitApplies: HistogramChild;
  readonly groupCommitDuration: HistogramChild;
  readonly fanoutRejected: FastCounter;

  constructor(options: { readonly version?: string; readonly defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: "mimi_ds_build_info", help: "Always 1; the labels say which build runs.", labelNames: ["version", "node"], registers }).set(
      { version: options.version ?? "unknown", node: process.versions.node },
      1,
    );
    const reg = this.registry;
    this.rpcRequests = new FastCounter("mimi_ds_rpc_requests_total", "RPCs finished, by service, method and status code (streams count when they end).", ["service", "method", "code"], reg);
    this.rpcDuration = new FastHistogram("mimi_ds_rpc_duration_seconds", "Duration of unary RPCs in the server, by service, method and status code.", ["service", "method", "code"], RPC_BUCKETS, reg);
    this.rpcStreams = new Gauge({ name: "mimi_ds_rpc_streams_open", help: "Server streams open now (Receive, Subscribe, Health.Watch, reflection).", labelNames: ["service", "method"], registers });
    this.fanoutStreams = new Gauge({ name: "mimi_ds_fanout_streams_open", help: "Hub side: FanoutService.Subscribe streams open now, by guest domain.", labelNames: ["guest"], registers });
    this.dsRequests = new FastCounter("mimi_ds_ds_requests_total", "DSRequests handled by this hub, by operation and result (ok or the DS error code name).", ["operation", "result"], reg);
    this.dsForwarded = new FastCounter("mimi_ds_ds_forwarded_total", "DSRequests forwarded to the group's hub, by operation, hub and result.", ["operation", "hub", "result"], reg);
    this.commits = new FastCounter("mimi_ds_commits_accepted_total", "Commits accepted by this hub (a group's epoch advanced), by operation.", ["operation"], reg);
    this.messages = new FastCounter("mimi_ds_messages_accepted_total", "Application messages (send_message) accepted by this hub.", [], reg).child();
    this.rateLimitHits = new FastCounter("mimi_ds_rate_limit_hits_total", "Requests refused by a rate limit: dsrequest (--rate-limit-*), fanout (--fanout-rate-limit).", ["limit"], reg);
    this.storeDuration = new FastHistogram("mimi_ds_store_duration_seconds", "Store calls, by operation (apply includes the wait for its group commit).", ["operation"], STORE_BUCKETS, reg);
    this.storeErrors = new FastCounter("mimi_ds_store_errors_total", "Store calls that failed, by operation and error class.", ["operation", "error"], reg);
    this.groupCommitApplies = new FastHistogram("mimi_ds_store_group_commit_applies", "SQLite: apply calls written per transaction (one fsync).", [], BATCH_BUCKETS, reg).child();
    this.groupCommitDuration = new FastHistogram("mimi_ds_store_group_commit_duration_seconds", "SQLite: duration of one group commit (write and fsync).", [], STORE_BUCKETS, reg).child();
    this.fanoutRejected = new FastCounter("mimi_ds_fanout_rejected_total", "Hub side: DSFanoutResponses of type error from guests, by guest and code.", ["guest", "code"], reg);

    const self = this;
    new Gauge({
      name: "mimi_ds_groups_cached",
      help: "Groups parsed in this instance's memory.",
      registers,
      collect() {
        const c = self.#sources.groupCache?.();
        if (c !== undefined) this.set(c.groups);
      },
    });
    const outboxEntries = new Gauge({ name: "mimi_ds_outbox_entries", help: "Hub side: DSFanoutRequests waiting for each peer's acknowledgement.", labelNames: ["peer"], registers });
    new Gauge({
      name: "mimi_ds_outbox_oldest_age_seconds",
      help: "Hub side: age of the oldest unacknowledged outbox entry per peer (0 when none): the peer's lag.",
      labelNames: ["peer"],
      registers,
      async collect() {
        const o = self.#sources.outboxes;
        if (o === undefined) return;
        const now = Date.now();
        for (const peer of o.peers()) {
          const queue = outboxQueue(peer);
          const info = await o.store.queueInfo(queue);
          outboxEntries.set({ peer }, info.length);
          const first = info.firstSeq !== undefined ? (await o.store.read(queue, info.firstSeq - 1n, 1))[0] : undefined;
          this.set({ peer }, first === undefined ? 0 : Math.max(0, (now - first.enqueuedAt) / 1000));
        }
      },
    });
    new Gauge({
      name: "mimi_ds_fanout_hub_connected",
      help: "Guest side: 1 while this DS's fanout stream from the hub is connected, else 0.",
      labelNames: ["hub"],
      registers,
      collect() {
        for (const h of self.#sources.hubs?.() ?? []) this.set({ hub: h.hub }, h.connected ? 1 : 0);
      },
    });
  }

  /**
   * What the scrape reads; set once, when the service is composed. Series
   * whose source is absent (the SQLite aggregates on MongoDB, cache bytes
   * when the cache does not account for them) are not exposed at all rather
   * than as a misleading 0.
   */
  setSources(sources: MetricsSources): void {
    if (this.#sourcesSet) throw new Error("metrics sources are set once");
    this.#sourcesSet = true;
    this.#sources = sources;
    const registers = [this.registry];
    const self = this;
    if (sources.groupCache?.().bytes !== undefined) {
      new Gauge({
        name: "mimi_ds_groups_cache_bytes",
        help: "Estimated memory of the cached groups.",
        registers,
        collect() {
          const bytes = self.#sources.groupCache?.().bytes;
          if (bytes !== undefined) this.set(bytes);
        },
      });
    }
    if (sources.sqlite === undefined) return;
    new Gauge({
      name: "mimi_ds_groups_hosted",
      help: "SQLite: groups stored by this hub.",
      registers,
      collect() {
        const a = self.#aggregate();
        if (a !== undefined) this.set(a.groups);
      },
    });
    new Gauge({
      name: "mimi_ds_client_queue_backlog_entries",
      help: "SQLite: entries waiting in local clients' queues, not yet acknowledged.",
      registers,
      collect() {
        const a = self.#aggregate();
        if (a !== undefined) this.set(a.backlog.entries);
      },
    });
    new Gauge({
      name: "mimi_ds_client_queues_nonempty",
      help: "SQLite: local clients with at least one unacknowledged queue entry.",
      registers,
      collect() {
        const a = self.#aggregate();
        if (a !== undefined) this.set(a.backlog.queues);
      },
    });
    new Gauge({
      name: "mimi_ds_client_queue_max_depth",
      help: "SQLite: unacknowledged entries of the fullest client queue.",
      registers,
      collect() {
        const a = self.#aggregate();
        if (a !== undefined) this.set(a.backlog.maxDepth);
      },
    });
    new Gauge({
      name: "mimi_ds_client_queue_oldest_age_seconds",
      help: "SQLite: age of the oldest unacknowledged client queue entry (0 when none).",
      registers,
      collect() {
        const a = self.#aggregate();
        if (a !== undefined) this.set(a.backlog.oldest === undefined ? 0 : Math.max(0, (Date.now() - a.backlog.oldest) / 1000));
      },
    });
  }

  /** The Prometheus text exposition. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  // ------------------------------------------------------------------ RPCs

  /** Counts and times every RPC; the outermost interceptor. */
  interceptor(): Interceptor {
    // Label children per method and status code, made on first use.
    type Pair = { readonly counter: CounterChild; readonly histogram: HistogramChild };
    const children = new WeakMap<DescMethod, Pair[]>();
    const childOf = (method: DescMethod, code: number): Pair => {
      let byCode = children.get(method);
      if (byCode === undefined) children.set(method, (byCode = []));
      let pair = byCode[code];
      if (pair === undefined) {
        const labels = [method.parent.typeName, method.name, codeName(code as Code)];
        pair = byCode[code] = { counter: this.rpcRequests.child(...labels), histogram: this.rpcDuration.child(...labels) };
      }
      return pair;
    };
    const fanoutService = "mimi.ds.v1.FanoutService";
    const fanoutStreams = this.fanoutStreams;
    return (next) => async (req) => {
      const start = performance.now();
      try {
        const res = await next(req);
        if (!res.stream) {
          const { counter, histogram } = childOf(req.method, 0);
          counter.inc();
          histogram.observe((performance.now() - start) / 1000);
          return res;
        }
        const streams = this.rpcStreams.labels(req.service.typeName, req.method.name);
        const guest = req.service.typeName === fanoutService ? req.contextValues.get(requestContextKey).peerDomain : undefined;
        const messages = res.message;
        let code = Code.Canceled as number;
        return {
          ...res,
          // Counted from the stream's first step: a generator that never starts never runs its finally.
          message: (async function* () {
            streams.inc();
            if (guest !== undefined) fanoutStreams.inc({ guest });
            try {
              yield* messages;
              code = 0;
            } catch (err) {
              code = ConnectError.from(err).code;
              throw err;
            } finally {
              streams.dec();
              if (guest !== undefined) fanoutStreams.dec({ guest });
              childOf(req.method, code).counter.inc();
            }
          })(),
        };
      } catch (err) {
        const { counter, histogram } = childOf(req.method, ConnectError.from(err).code);
        counter.inc();
        if (!req.stream) histogram.observe((performance.now() - start) / 1000);
        throw err;
      }
    };
  }

  // ------------------------------------------------------------------ DSRequests

  /** Counts every DSRequest by operation and result; accepted commits and messages. */
  instrumentHandler(handler: DSRequestHandler): DSRequestHandler {
    const byOperation = new Map<string, Map<string, CounterChild>>();
    const child = (operation: string, result: string): CounterChild => {
      let m = byOperation.get(operation);
      if (m === undefined) byOperation.set(operation, (m = new Map()));
      let c = m.get(result);
      if (c === undefined) m.set(result, (c = this.dsRequests.child(operation, result)));
      return c;
    };
    return {
      handle: async (bytes, ctx) => {
        const handled = await handler.handle(bytes, ctx);
        const operation = operationOf(bytes);
        const result = handled.error === undefined ? "ok" : (dsErrorCodeName(handled.error.code) ?? `code_${handled.error.code}`);
        const hub = this.#forwarded.get(bytes);
        if (hub !== undefined) {
          this.dsForwarded.inc([operation, hub, result]);
          return handled;
        }
        child(operation, result).inc();
        if (handled.error === undefined) {
          if (operation === "send_message") this.messages.inc();
          else if (COMMIT_OPERATIONS.has(operation)) this.commits.inc([operation]);
        } else if (result === "rate_limited") this.rateLimitHits.inc(["dsrequest"]);
        return handled;
      },
    };
  }

  /** Marks a DSRequest as forwarded to `hub` (call from the peer client the DS forwards with). */
  markForwarded(bytes: Uint8Array, hub: string): void {
    this.#forwarded.set(bytes, hub);
  }

  /** A guest refused (part of) a DSFanoutRequest. */
  fanoutRejection(guest: string, code: string): void {
    this.fanoutRejected.inc([guest, code]);
  }

  // ------------------------------------------------------------------ store

  /** The store with every call timed (and failures, fanout rate-limit refusals counted). */
  instrumentStore<S extends Store>(store: S): S {
    const wrapped = new Map<PropertyKey, unknown>();
    const metrics = this;
    return new Proxy(store, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== "function") return value;
        let w = wrapped.get(prop);
        if (w !== undefined) return w;
        // (A method of more than four parameters would lose some below: left untimed.)
        if (typeof prop !== "string" || UNTIMED.has(prop) || (value as () => unknown).length > 4) {
          w = (value as (...a: unknown[]) => unknown).bind(target);
        } else {
          const timer = metrics.storeDuration.child(prop);
          const fn = value as (a?: unknown, b?: unknown, c?: unknown, d?: unknown) => Promise<unknown>;
          // Store methods take at most four arguments: fixed parameters, no array per call.
          w = async function (a?: unknown, b?: unknown, c?: unknown, d?: unknown) {
            const start = performance.now();
            try {
              const v = await fn.call(target, a, b, c, d);
              if (prop === "rateLimit" && (v as { allowed?: boolean }).allowed === false) metrics.rateLimitHits.inc([String(a).split(":", 1)[0] ?? "store"]);
              return v;
            } catch (err) {
              metrics.storeErrors.inc([prop, (err as Error)?.name ?? "Error"]);
              throw err;
            } finally {
              timer.observe((performance.now() - start) / 1000);
            }
          };
        }
        wrapped.set(prop, w);
        return w;
      },
    });
  }

  /** One SQLite group commit of `applies` calls that took `ms`. */
  groupCommit(applies: number, ms: number): void {
    this.groupCommitApplies.observe(applies);
    this.groupCommitDuration.observe(ms / 1000);
  }

  // ------------------------------------------------------------------ scrape-time reads

  #aggregate(): Aggregates | undefined {
    const db = this.#sources.sqlite;
    if (db === undefined) return undefined;
    const now = Date.now();
    if (this.#aggregates !== undefined && now - this.#aggregates.at < AGGREGATE_TTL_MS) return this.#aggregates;
    try {
      const groups = Number(db.prepare("SELECT count(*) FROM groups").pluck().get());
      // One scan of the client queues' range of the (queue, seq) index; ';' follows ':'.
      const row = db
        .prepare(
          `SELECT count(*) AS queues, coalesce(sum(n), 0) AS entries, coalesce(max(n), 0) AS max_depth, min(oldest) AS oldest
           FROM (SELECT count(*) AS n, min(enqueued_at) AS oldest FROM queue_entries
                 WHERE queue >= 'client:' AND queue < 'client;' GROUP BY queue)`,
        )
        .get() as { queues: bigint | number; entries: bigint | number; max_depth: bigint | number; oldest: bigint | number | null };
      this.#aggregates = {
        at: now,
        groups,
        backlog: { queues: Number(row.queues), entries: Number(row.entries), maxDepth: Number(row.max_depth), oldest: row.oldest === null ? undefined : Number(row.oldest) },
      };
    } catch {
      // A closed or busy database: report nothing rather than fail the scrape.
      return undefined;
    }
    return this.#aggregates;
  }
}
