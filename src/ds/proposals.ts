// The proposals the hub stores by reference (draft Section 8): members'
// self-removes and the hub's own Remove/Add proposals. Members must commit
// them, so a stored set that no commit can take would wedge the group; these
// rules keep every stored set committable (docs/protocol.md "Pending proposals"):
// - the same proposal again is answered ok and stored once;
// - a proposal removing a leaf that a pending proposal already removes, or
//   adding a client (or signature key) a pending Add already adds, is refused
//   (conflicting_proposal): a commit could not include both;
// - at most `perEpoch` proposals wait in one epoch (quota_exceeded);
// - a commit must include every pending proposal younger than `graceMs`;
//   older ones stop being required (members whose MLS library rejected them,
//   e.g. external Adds in OpenMLS, can commit again), except that a member
//   a pending Remove targets must always include it (it cannot dodge it);
// - the hub proposes Add only in groups whose members take external Adds.
import type { Proposal } from "ts-mls";
import { clientIdOf, type PendingProposal, type StagedCommit } from "../mls/index.js";
import { DSErrorCode, isSelfRemoveProposal, readDSProtocolVersion } from "../wire/index.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";
import type { HostedGroup } from "./groups.js";

export interface PendingProposalRules {
  /** Proposals that may wait in one epoch. */
  readonly perEpoch: number;
  /** How long a pending proposal stays required of every commit (ms). */
  readonly graceMs: number;
}

export const DEFAULT_PENDING_PROPOSAL_RULES: PendingProposalRules = Object.freeze({ perEpoch: 1000, graceMs: 5 * 60_000 });

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
const refKey = (ref: Uint8Array): string => Buffer.from(ref).toString("latin1");

/** The leaf a proposal removes, if it removes one (a SelfRemove removes its sender). */
function removedLeaf(proposal: Proposal, senderLeaf: number | undefined): number | undefined {
  if (proposal.proposalType === "remove") return proposal.remove.removed;
  if (isSelfRemoveProposal(proposal)) return senderLeaf;
  return undefined;
}

/** What a new proposal is, checked before the engine processes it. */
export type NewProposal =
  | { readonly removes: number }
  | { readonly adds: { readonly clientId: string; readonly signatureKey: Uint8Array } };

/** The proposal as received was stored already (answer ok, change nothing). */
export function isStoredAlready(group: HostedGroup, bytes: Uint8Array): boolean {
  for (const p of group.state.proposals.values()) if (sameBytes(p.message, bytes)) return true;
  return false;
}

/** Refuses a proposal that no commit could take together with the pending ones, or one too many. */
export function admitProposal(ctx: DSContext, group: HostedGroup, proposal: NewProposal, operation: string): void {
  const pending = [...group.state.proposals.values()];
  for (const p of pending) {
    if ("removes" in proposal) {
      if (removedLeaf(p.proposal, p.senderLeafIndex) === proposal.removes)
        failWith(DSErrorCode.conflicting_proposal, `${operation}: the removal of leaf ${proposal.removes} is already pending in epoch ${group.epoch}; commit it first`);
    } else if (p.proposal.proposalType === "add") {
      const kp = p.proposal.add.keyPackage;
      if (clientIdOf(kp.leafNode.credential) === proposal.adds.clientId || sameBytes(kp.leafNode.signaturePublicKey, proposal.adds.signatureKey))
        failWith(DSErrorCode.conflicting_proposal, `${operation}: an Add of ${proposal.adds.clientId} (or of its signature key) is already pending in epoch ${group.epoch}`);
    }
  }
  const { perEpoch } = ctx.config.pendingProposals;
  if (pending.length >= perEpoch) failWith(DSErrorCode.quota_exceeded, `${operation}: ${perEpoch} proposals already wait in epoch ${group.epoch}; commit them first`);
}

/**
 * The pending proposals a member's commit left out that it must include:
 * those younger than the grace period, and any that removes the committer.
 */
export function missingRequiredProposals(ctx: DSContext, group: HostedGroup, staged: StagedCommit, unreferenced: readonly PendingProposal[]): PendingProposal[] {
  const now = ctx.config.now();
  return unreferenced.filter((p) => {
    if (removedLeaf(p.proposal, p.senderLeafIndex) === staged.committer) return true;
    const at = group.proposedAt.get(refKey(p.ref)) ?? 0;
    return now - at < ctx.config.pendingProposals.graceMs;
  });
}

/** When each pending proposal of the group was stored, by ref (for the grace period). */
export function withProposedAt(group: HostedGroup, ref: Uint8Array, at: number): ReadonlyMap<string, number> {
  return new Map(group.proposedAt).set(refKey(ref), at);
}

/** Times as the store gives them, keyed like `proposedAt`. */
export function proposedAtOf(stored: readonly { readonly ref: Uint8Array; readonly createdAt: number }[]): ReadonlyMap<string, number> {
  return new Map(stored.map((p) => [refKey(p.ref), p.createdAt]));
}

/**
 * Whether the group's members take Add proposals from the hub: MIMI groups
 * (ds_protocol_version in the GroupContext: their clients follow draft
 * Section 8). Plain RFC 9420 groups are not asked (OpenMLS, for one, accepts
 * only Remove from external senders, so a hub Add would never be committed).
 */
export function acceptsHubAdds(group: HostedGroup): boolean {
  return readDSProtocolVersion(group.state.groupContext.extensions) !== undefined;
}
