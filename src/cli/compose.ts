// Composition root of `serve`: store + DS handler + server, and their teardown
// in reverse order (the server drains first, then the store closes).
import { mkdir, readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { join } from "node:path";
import { createDeliveryService } from "../ds/service.js";
import { adminRoute } from "../server/admin.js";
import { startServer, type RunningServer } from "../server/index.js";
import { openStore } from "../store/index.js";
import type { ServeConfig } from "./config.js";

export interface Service {
  readonly server: RunningServer;
  /** Graceful shutdown: drain the server, then close the store. */
  close(): Promise<void>;
}

export async function createService(config: ServeConfig, logger: Logger): Promise<Service> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const [cert, key, ca] = await Promise.all([
    readFile(config.tlsCert),
    readFile(config.tlsKey),
    config.tlsCa !== undefined ? readFile(config.tlsCa) : Promise.resolve(undefined),
  ]);
  const store = await openStore(config.store);
  try {
    const ds = await createDeliveryService({
      domain: config.domain,
      store,
      keyFile: join(config.dataDir, "hub-keys.json"),
      config: { rateLimits: config.rateLimits },
    });
    const server = await startServer({
      domain: config.domain,
      host: config.host,
      port: config.port,
      handler: ds.handler,
      hubInfo: ds.hubInfo,
      services: [adminRoute(ds.context)],
      tls: { cert, key, ...(ca !== undefined ? { ca } : {}) },
      logger,
      onClose: () => store.close(),
    });
    return { server, close: () => server.close() };
  } catch (err) {
    await store.close();
    throw err;
  }
}
