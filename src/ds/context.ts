// Everything an operation may read: configuration, the store, the hosted
// groups and the hub's identity. Operations stage; only merge.ts writes.
import type { EngineOptions } from "../mls/index.js";
import type { Store } from "../store/port.js";
import type { GroupRegistry } from "./groups.js";
import type { HubIdentity } from "./hub-identity.js";
import type { LocalClients } from "./local-clients.js";
import { defaultPolicy, type DSPolicy } from "./policy.js";
import type { PeerHubs } from "./peers.js";
import type { RateLimiter, RateLimits } from "./rate-limit.js";

export interface DSConfig {
  /** The DS domain this instance speaks for. */
  readonly domain: string;
  /** How long an epoch's ratchet tree is kept for joiners that have not fetched it (draft Section 7). */
  readonly historyRetentionMs: number;
  /** A full snapshot is written after this many logged commits (bounds replay at load). */
  readonly snapshotInterval: number;
  /** Application messages are accepted for the current epoch and this many before it. */
  readonly applicationEpochWindow: number;
  /** Anyone may fetch a group's GroupInfo + tree for an external join (else members only). */
  readonly openExternalJoin: boolean;
  readonly engine: EngineOptions;
  /** DSRequest rate limits (none by default). */
  readonly rateLimits: RateLimits;
  /** Membership, external-join, size, quota and KeyPackage-fetch rules (src/ds/policy.ts, docs/security.md). */
  readonly policy: DSPolicy;
  /** Milliseconds since the Unix epoch. */
  readonly now: () => number;
}

export const defaultDSConfig = (domain: string): DSConfig => ({
  domain,
  historyRetentionMs: 30 * 24 * 3600 * 1000,
  snapshotInterval: 64,
  applicationEpochWindow: 2,
  openExternalJoin: true,
  engine: {},
  rateLimits: {},
  policy: defaultPolicy,
  now: () => Date.now(),
});

export interface DSContext {
  readonly config: DSConfig;
  readonly store: Store;
  readonly groups: GroupRegistry;
  readonly hub: HubIdentity;
  /** Other DSs: where requests for their groups and clients are forwarded (Section 4.1, 9.9). */
  readonly peers?: PeerHubs;
  readonly rateLimiter: RateLimiter;
  /** This domain's registered clients (keys, FanoutAuthTokens); without it, leaves of local clients are refused. */
  readonly localClients?: LocalClients;
}
