// The hub's security policy (docs/security.md): who may be a member of a
// hosted group, who may join one by external commit, how large what a member
// brings in may be, and the limits on KeyPackage fetches, group creation,
// replayed messages and cache memory. Every limit is on by default; a
// development setting that relaxes one is named in `relaxedPolicy` so the
// process can log it.
import type { RateRule } from "./rate-limit.js";

/**
 * Who may join a group by external commit when the group itself says nothing
 * (no external_join_policy extension in its GroupContext):
 * - "resync": only a member replacing its own leaf (the commit removes a leaf
 *   with the joiner's signature key and client identifier);
 * - "open": anyone (what RFC 9420 allows a holder of the GroupInfo).
 */
export type ExternalJoinDefault = "resync" | "open";

export interface KeyPackagePolicy {
  /** key_packages without a registered_client signature or a peer's mutual TLS (anyone who can reach the port). */
  readonly allowAnonymous: boolean;
  /** KeyPackages one local client may fetch per window (each requested client counts one). */
  readonly perRequester: RateRule;
  /** KeyPackages one peer DS may fetch per window, for all its clients together. */
  readonly perPeer: RateRule;
  /** KeyPackages of one local client handed out per window, to everyone together. */
  readonly perTarget: RateRule;
  /** How far a registered_client timestamp may be from the DS's clock (also how long its replay record lives). */
  readonly maxClockSkewMs: number;
}

export interface DSPolicy {
  /**
   * A leaf naming a client of this domain must carry the signature key that
   * client registered, and a client brought in by someone else must present a
   * FanoutAuthToken this DS issued to it. "unchecked" is a development mode:
   * any identifier of this domain, any key, any token.
   */
  readonly localClients: "registered" | "unchecked";
  /** Members whose domain is neither this one nor a configured peer: refused, or allowed (fanout to them is signed but nobody may fetch it). */
  readonly foreignMembers: "refuse" | "allow";
  readonly externalJoins: ExternalJoinDefault;
  /** Largest credential (TLS-encoded Credential) a leaf may carry. */
  readonly maxCredentialBytes: number;
  /** Largest application message (send_message). */
  readonly maxApplicationMessageBytes: number;
  /** Largest handshake message: a commit, proposal, Welcome or create_group's GroupInfo, and its ratchet tree. */
  readonly maxHandshakeMessageBytes: number;
  /** Groups one client may have created and not deleted on this hub. */
  readonly maxGroupsPerCreator: number;
  /** Memory budget of the parsed-group cache, estimated from the groups' encoded state. */
  readonly groupCacheBytes: number;
  readonly keyPackages: KeyPackagePolicy;
  /**
   * How long the record of an accepted send_message lives at most (a replay
   * within it answers ok without a second fanout). Records also go once the
   * message's epoch has left the accepted window.
   */
  readonly sendReplayRetentionMs: number;
}

export const defaultPolicy: DSPolicy = Object.freeze({
  localClients: "registered",
  foreignMembers: "refuse",
  externalJoins: "resync",
  maxCredentialBytes: 16 * 1024,
  maxApplicationMessageBytes: 1024 * 1024,
  maxHandshakeMessageBytes: 8 * 1024 * 1024,
  maxGroupsPerCreator: 1000,
  groupCacheBytes: 512 * 1024 * 1024,
  keyPackages: Object.freeze({
    allowAnonymous: false,
    perRequester: { limit: 120, windowMs: 3_600_000 },
    perPeer: { limit: 6000, windowMs: 3_600_000 },
    perTarget: { limit: 30, windowMs: 3_600_000 },
    maxClockSkewMs: 5 * 60_000,
  }),
  sendReplayRetentionMs: 7 * 24 * 3_600_000,
});

/** A policy from defaults and overrides (keyPackages merged field by field). */
export function resolvePolicy(overrides: PolicyOverrides = {}): DSPolicy {
  const { keyPackages, ...rest } = overrides;
  const p: DSPolicy = { ...defaultPolicy, ...rest, keyPackages: { ...defaultPolicy.keyPackages, ...keyPackages } };
  for (const [name, v] of Object.entries({
    maxCredentialBytes: p.maxCredentialBytes,
    maxApplicationMessageBytes: p.maxApplicationMessageBytes,
    maxHandshakeMessageBytes: p.maxHandshakeMessageBytes,
    maxGroupsPerCreator: p.maxGroupsPerCreator,
    groupCacheBytes: p.groupCacheBytes,
    sendReplayRetentionMs: p.sendReplayRetentionMs,
    "keyPackages.maxClockSkewMs": p.keyPackages.maxClockSkewMs,
  })) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`policy ${name} must be a non-negative integer, not ${v}`);
  }
  return p;
}

export type PolicyOverrides = Partial<Omit<DSPolicy, "keyPackages">> & { readonly keyPackages?: Partial<KeyPackagePolicy> };

/** The settings of `p` weaker than the defaults, as sentences for a startup warning (empty: none). */
export function relaxedPolicy(p: DSPolicy): string[] {
  const out: string[] = [];
  if (p.localClients === "unchecked") out.push("local clients are not checked against their registration (any key, any FanoutAuthToken)");
  if (p.foreignMembers === "allow") out.push("members of domains that are not peers are accepted");
  if (p.externalJoins === "open") out.push("every group accepts external joins from anyone");
  if (p.keyPackages.allowAnonymous) out.push("anonymous key_packages requests are served");
  return out;
}
