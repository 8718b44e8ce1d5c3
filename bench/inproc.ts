// A DS in this process: the real dispatcher over a durable SQLite store
// (synchronous=FULL) in a temp directory, reached by a DSClient through an
// in-memory ConnectRPC transport (no network), and the handler itself for
// timing the server's part of a request.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRouterTransport } from "@connectrpc/connect";
import { DSClient } from "../src/client/index.js";
import type { DSConfig } from "../src/ds/context.js";
import { createDeliveryService, type DeliveryService } from "../src/ds/service.js";
import { registerHub } from "../src/server/hub.js";
import { openSqliteStore, type SqliteStore } from "../src/store/sqlite/store.js";

export interface InProcessHub {
  readonly ds: DeliveryService;
  readonly store: SqliteStore;
  /** Wall time spent in store.apply calls (from the call to durable), ms, since the last reset. */
  applyMs(): number;
  resetApplyMs(): void;
  readonly hub: DSClient;
  close(): Promise<void>;
}

export interface InProcessOptions {
  /** Data directory (ds.sqlite, hub-keys.json) to use and keep, e.g. to restart on it; default a temp dir removed on close. */
  readonly dir?: string;
  /** DS configuration (e.g. snapshotInterval). */
  readonly config?: Partial<Omit<DSConfig, "domain">>;
}

export async function startInProcessHub(domain: string, options: InProcessOptions = {}): Promise<InProcessHub> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "mimi-bench-inproc-"));
  const store = await openSqliteStore({ path: join(dir, "ds.sqlite"), synchronous: "FULL" });
  // The DS sees the store through a proxy that times apply (queueing, ops and the fsync).
  let applyMs = 0;
  const timed = new Proxy(store, {
    get(target, prop) {
      if (prop === "apply")
        return async (batch: Parameters<SqliteStore["apply"]>[0]) => {
          const t = performance.now();
          try {
            return await target.apply(batch);
          } finally {
            applyMs += performance.now() - t;
          }
        };
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  // Members are unregistered clients with made-up tokens (bench/lib.ts benchMember): the
  // in-process hub does not check them against a registration (docs/security.md).
  const policy = { localClients: "unchecked" as const, maxGroupsPerCreator: 100_000_000, ...options.config?.policy };
  const ds = await createDeliveryService({
    domain,
    store: timed,
    ...(options.dir !== undefined ? { keyFile: join(dir, "hub-keys.json") } : {}),
    config: { ...options.config, policy },
  });
  const transport = createRouterTransport((router) =>
    registerHub(router, {
      domain,
      handler: ds.handler,
      hubInfo: ds.hubInfo,
      onInternalError: (err) => console.error(err),
    }),
  );
  return {
    ds,
    store,
    hub: new DSClient(transport),
    applyMs: () => applyMs,
    resetApplyMs: () => {
      applyMs = 0;
    },
    async close() {
      await store.close();
      if (options.dir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}
