// Everything an operation may read: configuration, the store, the hosted
// groups and the hub's identity. Operations stage; only merge.ts writes.
import type { EngineOptions } from "../mls/index.js";
import type { Store } from "../store/port.js";
import type { GroupRegistry } from "./groups.js";
import type { HubIdentity } from "./hub-identity.js";
import type { LocalClients } from "./local-clients.js";
import { defaultPolicy, type DSPolicy } from "./policy.js";
import type { PeerHubs } from "./peers.js";
import { DEFAULT_PENDING_PROPOSAL_RULES, type PendingProposalRules } from "./proposals.js";
import type { ClientPolicy } from "./client-policy.js";
import type { RateLimiter, RateLimits } from "./rate-limit.js";

export interface DSConfig {
  /** The DS domain this instance speaks for. */
  readonly domain: string;
  /** How long an epoch's ratchet tree is kept for joiners that have not fetched it (draft Section 7). */
  readonly historyRetentionMs: number;
  /** How long the id of a deleted group stays taken (its tombstone refuses create_group). */
  readonly deletedGroupRetentionMs: number;
  /** A full snapshot is written after this many logged commits (bounds replay at load). */
  readonly snapshotInterval: number;
  /** Application messages are accepted for the current epoch and this many before it. */
  readonly applicationEpochWindow: number;
  /** Anyone may fetch a group's GroupInfo + tree for an external join (else members only). */
  readonly openExternalJoin: boolean;
  readonly engine: EngineOptions;
  /** Limits and grace period of stored proposals (src/ds/proposals.ts). */
  readonly pendingProposals: PendingProposalRules;
  /** DSRequest rate limits (none by default). */
  readonly rateLimits: RateLimits;
  /**
   * Which clients the hub serves (src/ds/client-policy.ts, docs/interop.md): "mimi"
   * (default: draft -05's FanoutAuth tokens, ds_protocol_version, signed
   * requests) or "rfc9420" (also standard RFC 9420 clients without them).
   */
  readonly clientPolicy: ClientPolicy;
  /** Membership, external-join, size, quota and KeyPackage-fetch rules (src/ds/policy.ts, docs/security.md). */
  readonly policy: DSPolicy;
  /** Milliseconds since the Unix epoch. */
  readonly now: () => number;
}

export const defaultDSConfig = (domain: string): DSConfig => ({
  domain,
  historyRetentionMs: 30 * 24 * 3600 * 1000,
  deletedGroupRetentionMs: 90 * 24 * 3600 * 1000,
  snapshotInterval: 64,
  applicationEpochWindow: 2,
  openExternalJoin: true,
  engine: {},
  pendingProposals: DEFAULT_PENDING_PROPOSAL_RULES,
  rateLimits: {},
  clientPolicy: "mimi",
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
