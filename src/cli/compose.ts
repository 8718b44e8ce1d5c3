// Composition root of `serve`: store, the DS domain layer (hub operations),
// the delivery layer (local clients, fanout streams, the guest consumer of
// peer hubs), and the server; torn down in reverse order (streams end, the
// server drains, then the store closes).
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import {
  createClientService,
  createFanoutService,
  DEFAULT_OUTBOX_RETENTION,
  FanoutTokenKeys,
  GuestConsumer,
  loadPeers,
  localClientDirectory,
  PeerDirectory,
  PeerTransports,
  startOutboxPurge,
  parseIssuerPublicKeys,
  startPurger,
} from "../delivery/index.js";
import { DSClient } from "../client/ds.js";
import type { PeerHubs } from "../ds/peers.js";
import { relaxedPolicy } from "../ds/policy.js";
import { createDeliveryService } from "../ds/service.js";
import { adminRoute } from "../server/admin.js";
import type { DomainTrust } from "../server/context.js";
import { startServer, type RunningServer } from "../server/index.js";
import { X509Certificate } from "node:crypto";
import { openStore } from "../store/index.js";
import type { ServeConfig } from "./config.js";

export interface Service {
  readonly server: RunningServer;
  /** Graceful shutdown: stop consuming and streaming, drain the server, then close the store. */
  close(): Promise<void>;
}

export async function createService(config: ServeConfig, logger: Logger): Promise<Service> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const h = config.hardening;
  const [cert, key, ca, registrationPem] = await Promise.all([
    readFile(config.tlsCert),
    readFile(config.tlsKey),
    config.tlsCa !== undefined ? readFile(config.tlsCa) : Promise.resolve(undefined),
    h.registrationKey !== undefined ? readFile(h.registrationKey, "utf8") : Promise.resolve(undefined),
  ]);
  const issuerKeys = registrationPem !== undefined ? parseIssuerPublicKeys(registrationPem) : [];
  if (h.openRegistration) {
    logger.warn("DEVELOPMENT MODE: open registration: a client id is bound to the first key that registers it (--open-registration)");
  } else if (issuerKeys.length === 0) {
    logger.warn("no --registration-key: Register refuses every new client (give the provider's issuer key, or --open-registration for development)");
  }
  const peers = config.peers !== undefined ? loadPeers(config.peers) : new PeerDirectory([]);
  const store = await openStore(config.store);
  if (config.clientPolicy === "rfc9420") {
    logger.warn(
      { clientPolicy: config.clientPolicy },
      "client policy rfc9420: groups without ds_protocol_version, KeyPackages without FanoutAuth tokens, anonymous commits and messages, and token-less fanout to our clients are accepted (docs/interop.md)",
    );
  }
  const transports = new PeerTransports(peers, { cert, key });
  try {
    const peerHubs: PeerHubs = {
      has: (domain) => peers.get(domain) !== undefined,
      submit: (domain, bytes) => new DSClient(transports.get(domain)!).submit(bytes),
    };
    const tokens = FanoutTokenKeys.open(config.fanoutTokenKey);
    const ds = await createDeliveryService({
      domain: config.domain,
      store,
      keyFile: join(config.dataDir, "hub-keys.json"),
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
    const fanout = createFanoutService({ store, logger });
    // Client certificates of peers are verified against their CAs as well as ours,
    // and name a domain only when issued by the CA configured for that domain.
    const cas = peers.caBundle(ca);
    const ownCas = ca !== undefined ? certificatesOf(ca) : [];
    const domainTrust: DomainTrust = (domain) => {
      if (domain === config.domain) return ownCas;
      const peer = peers.get(domain);
      return peer !== undefined ? certificatesOf(peer.ca) : [];
    };
    const server = await startServer({
      domain: config.domain,
      host: config.host,
      port: config.port,
      handler: ds.handler,
      hubInfo: ds.hubInfo,
      services: [clients.route, fanout.route, adminRoute(ds.context)],
      tls: { cert, key, ...(cas.length > 0 ? { ca: cas } : {}) },
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
    const purger = startPurger(store, h.purgeIntervalMs, logger);
    const consumer = new GuestConsumer({
      domain: config.domain,
      store,
      tokens,
      peers,
      tls: { cert, key },
      logger,
      ...(config.fanoutRateLimit !== undefined ? { rateLimit: config.fanoutRateLimit } : {}),
      acceptTokenless: config.clientPolicy === "rfc9420",
    });
    consumer.start();
    const outboxPurge = startOutboxPurge(store, { ...DEFAULT_OUTBOX_RETENTION, ...config.outboxRetention }, { logger });
    return {
      server,
      async close() {
        outboxPurge.stop();
        purger.stop();
        await consumer.stop();
        clients.close();
        fanout.close();
        transports.close();
        await server.close();
      },
    };
  } catch (err) {
    transports.close();
    await store.close();
    throw err;
  }
}

/** DER of every certificate in a PEM bundle. */
function certificatesOf(pem: Buffer): Buffer[] {
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b).raw);
}
