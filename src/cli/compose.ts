// Composition root of `serve`: start-up checks (integrity of the data dir,
// TLS files, peers), store, the DS domain layer (hub operations), the
// delivery layer (local clients, fanout streams, the guest consumer of peer
// hubs), the server and the metrics listener; torn down in reverse order
// (streams end, the server drains, then the store closes). Every start-up
// failure an operator can fix is a ConfigError naming the flag (exit 2).
import type { Logger } from "pino";
import { readFile } from "node:fs/promises";
import {
  createClientService,
  createFanoutService,
  DEFAULT_OUTBOX_RETENTION,
  FanoutTokenKeyError,
  FanoutTokenKeys,
  GuestConsumer,
  loadPeers,
  localClientDirectory,
  parseIssuerPublicKeys,
  PeerDirectory,
  PeersConfigError,
  PeerTransports,
  startOutboxPurge,
  startPurger,
} from "../delivery/index.js";
import { relaxedPolicy } from "../ds/policy.js";
import { createClientAdmin } from "../delivery/client-admin.js";
import { DSClient } from "../client/ds.js";
import type { PeerHubs } from "../ds/peers.js";
import { createDeliveryService } from "../ds/service.js";
import { adminRoute } from "../server/admin.js";
import type { DomainTrust } from "../server/context.js";
import { startServer, type RunningServer } from "../server/index.js";
import { DSMetrics } from "../server/metrics.js";
import { startMetricsListener, type MetricsListener } from "../server/metrics-listener.js";
import type { Readiness } from "../server/probes.js";
import { openStore, SqliteStore, type Store } from "../store/index.js";
import { ConfigError, type ServeConfig } from "./config.js";
import { checkStartupIntegrity, HUB_KEY_FILE } from "./integrity.js";
import { certificatesOf, listenError, loadTls, mongoUriWithTimeout, storeOpenError } from "./preflight.js";
import { join } from "node:path";
import { dsFanoutErrorCodeName } from "../wire/index.js";

export interface Service {
  readonly server: RunningServer;
  readonly metrics?: MetricsListener;
  /** Graceful shutdown: stop consuming and streaming, drain the server, then close the store. */
  close(): Promise<void>;
}

const isMongo = (uri: string): boolean => /^mongodb(\+srv)?:\/\//i.test(uri);

export async function createService(config: ServeConfig, logger: Logger, version: string): Promise<Service> {
  const integrity = checkStartupIntegrity(config);
  for (const note of integrity.notes) logger.info({ note }, "start-up check");
  const tls = await loadTls(config);
  for (const warning of tls.warnings) logger.warn({ warning }, "start-up check");
  const h = config.hardening;
  let issuerKeys: ReturnType<typeof parseIssuerPublicKeys> = [];
  if (h.registrationKey !== undefined) {
    try {
      issuerKeys = parseIssuerPublicKeys(await readFile(h.registrationKey, "utf8"));
    } catch (err) {
      throw new ConfigError(`--registration-key ${h.registrationKey}: ${(err as Error).message}`);
    }
  }
  if (h.openRegistration) {
    logger.warn("DEVELOPMENT MODE: open registration: a client id is bound to the first key that registers it (--open-registration)");
  } else if (issuerKeys.length === 0) {
    logger.warn("no --registration-key: Register refuses every new client (give the provider's issuer key, or --open-registration for development)");
  }
  if (config.clientPolicy === "rfc9420") {
    logger.warn(
      { clientPolicy: config.clientPolicy },
      "client policy rfc9420: groups without ds_protocol_version, KeyPackages without FanoutAuth tokens, anonymous commits and messages, and token-less fanout to our clients are accepted (docs/interop.md)",
    );
  }
  let peers: PeerDirectory;
  try {
    peers = config.peers !== undefined ? loadPeers(config.peers) : new PeerDirectory([]);
  } catch (err) {
    if (err instanceof PeersConfigError) throw new ConfigError(`--peers ${err.message}`);
    throw err;
  }
  const metrics = new DSMetrics({ version });
  let raw: Store;
  try {
    raw = await openStore(isMongo(config.store) ? mongoUriWithTimeout(config.store) : config.store);
  } catch (err) {
    throw storeOpenError(err, config.store);
  }
  if (raw instanceof SqliteStore) raw.onGroupCommit = (applies, ms) => metrics.groupCommit(applies, ms);
  const store = metrics.instrumentStore(raw);
  const transports = new PeerTransports(peers, { cert: tls.cert, key: tls.key });
  let metricsListener: MetricsListener | undefined;
  try {
    // Before any key file is made: a missing one beside a database in use is refused.
    await integrity.checkDatabase(async () => (await store.listGroups({ limit: 1 })).length > 0);
    let tokens: FanoutTokenKeys;
    try {
      tokens = FanoutTokenKeys.open(config.fanoutTokenKey);
    } catch (err) {
      if (err instanceof FanoutTokenKeyError) throw new ConfigError(`--fanout-token-key ${err.message}`);
      if ((err as NodeJS.ErrnoException).code !== undefined) throw new ConfigError(`--fanout-token-key ${config.fanoutTokenKey}: ${(err as Error).message}`);
      throw err;
    }
    const peerHubs: PeerHubs = {
      has: (domain) => peers.get(domain) !== undefined,
      submit: (domain, bytes) => {
        metrics.markForwarded(bytes, domain);
        return new DSClient(transports.get(domain)!).submit(bytes);
      },
    };
    const ds = await createDeliveryService({
      domain: config.domain,
      store,
      keyFile: join(config.dataDir, HUB_KEY_FILE),
      config: {
        rateLimits: config.rateLimits,
        clientPolicy: config.clientPolicy,
        policy: config.policy,
        ...(config.snapshotInterval !== undefined ? { snapshotInterval: config.snapshotInterval } : {}),
      },
      peers: peerHubs,
      localClients: localClientDirectory({ store, tokens, domain: config.domain }),
      ...(config.maxCachedGroups !== undefined ? { maxCachedGroups: config.maxCachedGroups } : {}),
    });
    integrity.confirm(ds.context.hub.fanoutPublicKey);
    for (const relaxed of relaxedPolicy(ds.context.config.policy)) logger.warn({ policy: relaxed }, "development policy: a security limit is relaxed");
    const clients = createClientService({
      domain: config.domain,
      store,
      tokens,
      logger,
      registration: { issuerKeys, open: h.openRegistration },
      ...(h.registrationRate !== undefined ? { registrationRate: h.registrationRate } : {}),
      ...(h.maxKeyPackagesPerClient !== undefined ? { maxKeyPackagesPerClient: h.maxKeyPackagesPerClient } : {}),
      ...(h.maxReceiveStreamsPerClient !== undefined ? { maxReceiveStreamsPerClient: h.maxReceiveStreamsPerClient } : {}),
    });
    const fanout = createFanoutService({
      store,
      hub: ds.context.hub,
      logger,
      onRejected: (r) => metrics.fanoutRejection(r.guestDomain, dsFanoutErrorCodeName(r.error.code) ?? `code_${r.error.code}`),
    });
    // Client certificates of peers are verified against their CAs as well as ours,
    // and name a domain only when issued by the CA configured for that domain:
    // --tls-ca for our own (AdminService), each peer's `ca` for that peer.
    const cas = peers.caBundle(tls.ca);
    const trusted = new Map<string, Buffer[]>(peers.peers.map((p) => [p.domain, certificatesOf(p.ca, `--peers ${p.domain}: ca`).map((c) => c.raw)]));
    trusted.set(config.domain, tls.ca !== undefined ? certificatesOf(tls.ca).map((c) => c.raw) : []);
    const domainTrust: DomainTrust = (domain) => trusted.get(domain) ?? [];
    const readiness: Readiness = async () => {
      try {
        await withTimeout(raw.ping(), 2000);
        return { ready: true };
      } catch (err) {
        return { ready: false, reason: `store: ${(err as Error).message}` };
      }
    };
    let server: RunningServer;
    try {
      server = await startServer({
        domain: config.domain,
        host: config.host,
        port: config.port,
        handler: metrics.instrumentHandler(ds.handler),
        hubInfo: ds.hubInfo,
        version,
        readiness,
        interceptors: [metrics.interceptor()],
        services: [clients.route, fanout.route, adminRoute(ds.context, createClientAdmin({ domain: config.domain, store }))],
        tls: { cert: tls.cert, key: tls.key, ...(cas.length > 0 ? { ca: cas } : {}) },
        domainTrust,
        corsOrigins: config.corsOrigins,
        maxRequestBytes: config.maxRequestBytes,
        logger,
        limits: {
          ...(h.maxConcurrentStreams !== undefined ? { maxConcurrentStreams: h.maxConcurrentStreams } : {}),
          ...(h.maxStreamingCallsPerSession !== undefined ? { maxStreamingCallsPerSession: h.maxStreamingCallsPerSession } : {}),
          ...(h.idleTimeoutMs !== undefined ? { idleTimeoutMs: h.idleTimeoutMs } : {}),
          ...(h.headersTimeoutMs !== undefined ? { headersTimeoutMs: h.headersTimeoutMs } : {}),
          ...(h.requestBodyTimeoutMs !== undefined ? { requestBodyTimeoutMs: h.requestBodyTimeoutMs } : {}),
          ...(h.maxSessionMemoryMb !== undefined ? { maxSessionMemoryMb: h.maxSessionMemoryMb } : {}),
        },
        onClose: () => store.close(),
      });
    } catch (err) {
      throw listenError(err, "--listen", config.host, config.port) ?? err;
    }
    const consumer = new GuestConsumer({
      domain: config.domain,
      store,
      tokens,
      peers,
      tls: { cert: tls.cert, key: tls.key },
      logger,
      ...(config.fanoutRateLimit !== undefined ? { rateLimit: config.fanoutRateLimit } : {}),
      acceptTokenless: config.clientPolicy === "rfc9420",
    });
    metrics.setSources({
      groupCache: () => ds.context.groups.cacheStats(),
      ...(raw instanceof SqliteStore ? { sqlite: raw.database } : {}),
      outboxes: { store, peers: () => peers.peers.map((p) => p.domain) },
      hubs: () => consumer.status(),
    });
    if (config.metricsListen !== undefined) {
      try {
        metricsListener = await startMetricsListener({ ...config.metricsListen, metrics, logger, readiness: async () => (server.health.draining ? { ready: false, reason: "draining" } : readiness()) });
      } catch (err) {
        await server.close();
        throw listenError(err, "--metrics-listen", config.metricsListen.host, config.metricsListen.port) ?? err;
      }
    }
    consumer.start();
    const purger = startPurger(store, h.purgeIntervalMs, logger);
    const outboxPurge = startOutboxPurge(store, { ...DEFAULT_OUTBOX_RETENTION, ...config.outboxRetention }, { logger });
    return {
      server,
      ...(metricsListener !== undefined ? { metrics: metricsListener } : {}),
      async close() {
        outboxPurge.stop();
        purger.stop();
        await consumer.stop();
        clients.close();
        fanout.close();
        transports.close();
        await server.close();
        await metricsListener?.close();
      },
    };
  } catch (err) {
    transports.close();
    await store.close().catch(() => undefined);
    throw err;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
