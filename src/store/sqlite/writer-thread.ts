// SqliteWriter in a worker thread: the main thread posts a group of apply
// calls and goes on serving requests while the worker writes and fsyncs them;
// the answer comes back as a message. Typed store errors cross the thread as
// plain records and are rebuilt on this side.
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import {
  ConsumedKeyPackageError,
  DuplicateKeyPackageError,
  EpochConflictError,
  KeyPackageQuotaError,
  FeedSetConflictError,
  GroupExistsError,
  QuotaExceededError,
  StoreError,
  StoreRangeError,
  StoreUnavailableError,
  UnknownClientError,
  UnknownGroupError,
} from "../errors.js";
import type { PurgeResult, QueueId, QueueTrim, RateLimitResult, RateLimitRule, WriteOp } from "../port.js";
import { openConnection, translate, type ConnectionOptions } from "./statements.js";
import { DuplicateBatch, GroupAborted, SqliteWriter, type ApplyOutcome } from "./writer.js";

const ROLE = "mimi-ds-sqlite-writer";

type Call =
  | { readonly kind: "group"; readonly batches: readonly (readonly WriteOp[])[]; readonly now: number }
  | { readonly kind: "rateLimit"; readonly key: string; readonly rule: RateLimitRule; readonly now: number }
  | { readonly kind: "purge"; readonly now: number }
  | { readonly kind: "trimQueues"; readonly prefix: string; readonly trim: QueueTrim };

type WireError =
  | { readonly type: "epochConflict"; readonly groupId: string; readonly expected: bigint; readonly current: bigint }
  | { readonly type: "groupExists"; readonly groupId: string; readonly deleted: boolean }
  | { readonly type: "unknownGroup"; readonly groupId: string }
  | { readonly type: "unknownClient"; readonly clientId: string }
  | { readonly type: "duplicateKeyPackage" | "consumedKeyPackage"; readonly ref: Uint8Array }
  | { readonly type: "keyPackageQuota"; readonly clientId: string; readonly limit: number }
  | { readonly type: "duplicateBatch" }
  | { readonly type: "quota"; readonly quota: string; readonly limit: number }
  | { readonly type: "feedSetConflict"; readonly groupId: string; readonly expected?: string; readonly current?: string }
  | { readonly type: "unavailable" | "range" | "store" | "other"; readonly message: string };

type WireOutcome = { readonly ok: { result: unknown; appended: Map<QueueId, bigint> } } | { readonly err: WireError };

function toWire(e: unknown): WireError {
  const err = translate(e);
  if (err instanceof EpochConflictError) return { type: "epochConflict", groupId: err.groupId, expected: err.expectedEpoch, current: err.currentEpoch };
  if (err instanceof GroupExistsError) return { type: "groupExists", groupId: err.groupId, deleted: err.deleted };
  if (err instanceof UnknownGroupError) return { type: "unknownGroup", groupId: err.groupId };
  if (err instanceof UnknownClientError) return { type: "unknownClient", clientId: err.clientId };
  if (err instanceof ConsumedKeyPackageError) return { type: "consumedKeyPackage", ref: err.keyPackageRef };
  if (err instanceof DuplicateKeyPackageError) return { type: "duplicateKeyPackage", ref: err.keyPackageRef };
  if (err instanceof KeyPackageQuotaError) return { type: "keyPackageQuota", clientId: err.clientId, limit: err.limit };
  if (err instanceof DuplicateBatch) return { type: "duplicateBatch" };
  if (err instanceof QuotaExceededError) return { type: "quota", quota: err.quota, limit: err.limit };
  if (err instanceof FeedSetConflictError) {
    return { type: "feedSetConflict", groupId: err.groupId, ...(err.expected !== undefined ? { expected: err.expected } : {}), ...(err.current !== undefined ? { current: err.current } : {}) };
  }
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof StoreUnavailableError) return { type: "unavailable", message };
  if (err instanceof StoreRangeError) return { type: "range", message };
  if (err instanceof StoreError) return { type: "store", message };
  return { type: "other", message };
}

function fromWire(w: WireError): Error {
  switch (w.type) {
    case "epochConflict":
      return new EpochConflictError(w.groupId, w.expected, w.current);
    case "groupExists":
      return new GroupExistsError(w.groupId, w.deleted);
    case "unknownGroup":
      return new UnknownGroupError(w.groupId);
    case "unknownClient":
      return new UnknownClientError(w.clientId);
    case "duplicateKeyPackage":
      return new DuplicateKeyPackageError(w.ref);
    case "consumedKeyPackage":
      return new ConsumedKeyPackageError(w.ref);
    case "keyPackageQuota":
      return new KeyPackageQuotaError(w.clientId, w.limit);
    case "duplicateBatch":
      return new DuplicateBatch();
    case "quota":
      return new QuotaExceededError(w.quota, w.limit);
    case "feedSetConflict":
      return new FeedSetConflictError(w.groupId, w.expected, w.current);
    case "unavailable":
      return new StoreUnavailableError(w.message);
    case "range":
      return new StoreRangeError(w.message);
    case "store":
      return new StoreError(w.message);
    case "other":
      return new Error(w.message);
  }
}

/** The main thread's handle on the writer thread. */
export class WriterThread {
  readonly #worker: Worker;
  readonly #calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #next = 1;
  #failed: Error | undefined;
  #onIdle: (() => void) | undefined;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.on("message", (m: { id: number; value?: unknown; error?: WireError; aborted?: WireError }) => {
      const call = this.#calls.get(m.id);
      if (call === undefined) return;
      this.#calls.delete(m.id);
      if (m.error !== undefined) call.reject(fromWire(m.error));
      else if (m.aborted !== undefined) call.reject(new GroupAborted(fromWire(m.aborted)));
      else call.resolve(m.value);
      if (this.#calls.size === 0) this.#onIdle?.();
    });
    const fail = (err: Error) => {
      this.#failed = new StoreUnavailableError(`sqlite writer thread: ${err.message}`, { cause: err });
      for (const c of this.#calls.values()) c.reject(this.#failed);
      this.#calls.clear();
      this.#onIdle?.();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`exited with code ${code}`)));
  }

  /** Start the worker on `options.path` (its schema already migrated); resolves once it has opened the file. */
  static async start(options: ConnectionOptions): Promise<WriterThread> {
    const entry = new URL(import.meta.url).href;
    // Run from source (tests, tsx) the worker needs the TypeScript loader too, found
    // from this module (an eval'd worker would resolve it from the working directory).
    const tsx = entry.endsWith(".ts") ? import.meta.resolve("tsx/esm/api") : undefined;
    const worker = new Worker(
      `const { workerData } = require("node:worker_threads");
      (async () => {
        if (workerData.tsx !== undefined) (await import(workerData.tsx)).register();
        await import(workerData.entry);
      })();`,
      { eval: true, workerData: { role: ROLE, entry, tsx, options } },
    );
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(translate(err));
      worker.once("error", onError);
      worker.once("message", (m: { ready?: true; error?: WireError }) => {
        worker.off("error", onError);
        if (m.ready === true) resolve();
        else reject(fromWire(m.error ?? { type: "other", message: "the writer thread did not start" }));
      });
    });
    return new WriterThread(worker);
  }

  #call<T>(call: Call): Promise<T> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, call });
    });
  }

  /** Rejects with GroupAborted when nothing of the group was applied. */
  async applyGroup(batches: readonly (readonly WriteOp[])[], now: number): Promise<ApplyOutcome[]> {
    const outcomes = await this.#call<WireOutcome[]>({ kind: "group", batches, now });
    return outcomes.map((o) => ("ok" in o ? (o as ApplyOutcome) : { err: fromWire(o.err) }));
  }

  rateLimit(key: string, rule: RateLimitRule, now: number): Promise<RateLimitResult> {
    return this.#call({ kind: "rateLimit", key, rule, now });
  }

  purgeExpired(now: number): Promise<PurgeResult> {
    return this.#call({ kind: "purge", now });
  }

  trimQueues(prefix: string, trim: QueueTrim): Promise<number> {
    return this.#call({ kind: "trimQueues", prefix, trim });
  }

  /** Ends the thread (its connection closes with it) once the calls already posted are answered. */
  async close(): Promise<void> {
    while (this.#calls.size > 0) await new Promise<void>((r) => (this.#onIdle = r));
    this.#worker.removeAllListeners("exit");
    await this.#worker.terminate();
  }
}

/** The worker's side: one connection, calls answered in the order they came. */
function serve(options: ConnectionOptions): void {
  const port = parentPort!;
  let writer: SqliteWriter;
  try {
    writer = new SqliteWriter(openConnection(options));
  } catch (err) {
    port.postMessage({ error: toWire(err) });
    return;
  }
  port.postMessage({ ready: true });
  port.on("message", ({ id, call }: { id: number; call: Call }) => {
    try {
      switch (call.kind) {
        case "group": {
          const outcomes = writer.applyGroup(call.batches, call.now);
          port.postMessage({ id, value: outcomes.map((o): WireOutcome => ("ok" in o ? o : { err: toWire(o.err) })) });
          break;
        }
        case "rateLimit":
          port.postMessage({ id, value: writer.rateLimit(call.key, call.rule, call.now) });
          break;
        case "purge":
          port.postMessage({ id, value: writer.purgeExpired(call.now) });
          break;
        case "trimQueues":
          port.postMessage({ id, value: writer.trimQueues(call.prefix, call.trim) });
          break;
      }
    } catch (err) {
      if (err instanceof GroupAborted) port.postMessage({ id, aborted: toWire(err.original) });
      else port.postMessage({ id, error: toWire(err) });
    }
  });
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === ROLE) serve((workerData as { options: ConnectionOptions }).options);
