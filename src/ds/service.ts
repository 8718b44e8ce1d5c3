// Composition of the DS domain layer: the hub identity, the hosted groups and
// the dispatcher over one store. The transport gets `handler` and `hubInfo`.
import type { Store } from "../store/port.js";
import { DS_PROTOCOL_VERSION, DSErrorCode, encodeWith, externalSenderCodec } from "../wire/index.js";
import { defaultDSConfig, type DSConfig, type DSContext } from "./context.js";
import { createDispatcher } from "./dispatch.js";
import { DSFailure } from "./errors.js";
import { GroupRegistry } from "./groups.js";
import type { DSRequestHandler, HubInfoSource } from "./handler.js";
import { HubIdentity, suiteName } from "./hub-identity.js";
import type { LocalClients } from "./local-clients.js";
import type { PeerHubs } from "./peers.js";
import { resolvePolicy, type PolicyOverrides } from "./policy.js";
import { RateLimiter } from "./rate-limit.js";

export interface DeliveryServiceOptions {
  readonly domain: string;
  readonly store: Store;
  /** The hub's key file (created on first start); omitted keeps keys in memory. */
  readonly keyFile?: string;
  readonly config?: Partial<Omit<DSConfig, "domain" | "policy">> & { readonly policy?: PolicyOverrides };
  /** Other DSs, for proxying and cross-domain KeyPackages. */
  readonly peers?: PeerHubs;
  /** Parsed groups kept in memory. */
  readonly maxCachedGroups?: number;
  /** This domain's registered clients (src/delivery/local-directory.ts); needed to admit local clients into groups. */
  readonly localClients?: LocalClients;
}

export interface DeliveryService {
  readonly context: DSContext;
  readonly handler: DSRequestHandler;
  readonly hubInfo: HubInfoSource;
}

export async function createDeliveryService(o: DeliveryServiceOptions): Promise<DeliveryService> {
  const config: DSConfig = { ...defaultDSConfig(o.domain), ...o.config, domain: o.domain, policy: resolvePolicy(o.config?.policy) };
  const hub = await HubIdentity.open(o.domain, o.keyFile);
  const groups = new GroupRegistry(o.store, {
    engine: config.engine,
    localDomain: config.domain,
    maxCachedBytes: config.policy.groupCacheBytes,
    ...(o.maxCachedGroups !== undefined ? { maxCached: o.maxCachedGroups } : {}),
  });
  const rateLimiter = new RateLimiter(config.rateLimits, config.now);
  const context: DSContext = {
    config,
    store: o.store,
    groups,
    hub,
    rateLimiter,
    ...(o.peers !== undefined ? { peers: o.peers } : {}),
    ...(o.localClients !== undefined ? { localClients: o.localClients } : {}),
  };
  const hubInfo: HubInfoSource = {
    async hubInfo(cipherSuite) {
      const suite = suiteName(cipherSuite);
      if (suite === undefined) throw new DSFailure(DSErrorCode.invalid_request, `unknown ciphersuite ${cipherSuite}`);
      return {
        externalSender: encodeWith(externalSenderCodec, await hub.externalSender(suite)),
        protocolVersions: [DS_PROTOCOL_VERSION],
        fanoutSignatureKey: hub.fanoutPublicKey,
      };
    },
  };
  return { context, handler: createDispatcher(context), hubInfo };
}
