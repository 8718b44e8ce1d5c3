// DS-initiated proposals (draft Section 8): the hub, listed in every hosted
// group's external_senders, proposes removing or adding a client. The
// proposal goes through the engine like any other, is stored for the epoch
// (the next commit must include it by reference) and is fanned out to every
// member. The operator reaches this through AdminService (src/server/admin.ts).
import type { KeyPackage, Proposal } from "ts-mls";
import { protectExternalProposalPublic } from "ts-mls/messageProtectionPublic.js";
import { epochOf, externalSenderIndex, memberByClientId, merge, processMessage } from "../mls/index.js";
import { EpochConflictError } from "../store/errors.js";
import { DSErrorCode, encodeMLSMessage } from "../wire/index.js";
import { admitLeaves, keyPackageLeaf } from "./admission.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";
import { groupKey, NO_CHANGE, type HostedGroup } from "./groups.js";
import { suiteImpl } from "./hub-identity.js";
import { mergeStaged } from "./merge.js";

/** The hub proposes removing `clientId`; returns the ProposalRef. */
export function proposeRemoval(ctx: DSContext, groupId: Uint8Array, clientId: string): Promise<Uint8Array> {
  return propose(ctx, groupId, (group) => {
    const m = memberByClientId(group.state, clientId);
    if (m === undefined) failWith(DSErrorCode.unknown_client, `${clientId} is not a member of the group`);
    return { proposalType: "remove", remove: { removed: m.leafIndex } };
  });
}

/** The hub proposes adding the client of `keyPackage`; returns the ProposalRef. */
export async function proposeAddition(ctx: DSContext, groupId: Uint8Array, keyPackage: KeyPackage): Promise<Uint8Array> {
  // A proposal the next commit must include but the hub would refuse to accept would wedge the group.
  await admitLeaves(ctx, groupId, [keyPackageLeaf(keyPackage)], "propose_addition");
  return propose(ctx, groupId, () => ({ proposalType: "add", add: { keyPackage } }));
}

async function propose(ctx: DSContext, groupId: Uint8Array, build: (g: HostedGroup) => Proposal): Promise<Uint8Array> {
  const key = groupKey(groupId);
  return ctx.groups.exclusive(key, async () => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await proposeOnce(ctx, key, build);
      } catch (err) {
        if (!(err instanceof EpochConflictError) || attempt > 0) throw err;
        ctx.groups.evict(key);
      }
    }
  });
}

async function proposeOnce(ctx: DSContext, key: string, build: (g: HostedGroup) => Proposal): Promise<Uint8Array> {
  const group = await ctx.groups.get(key);
  if (group === undefined) failWith(DSErrorCode.unknown_group, "this hub hosts no group with that group id");
  const gc = group.state.groupContext;
  const { publicKey, signKey } = await ctx.hub.keyPair(gc.cipherSuite);
  const senderIndex = externalSenderIndex(group.state, publicKey);
  if (senderIndex === undefined) failWith(DSErrorCode.permission_denied, "this hub is not in the group's external_senders");
  const { publicMessage } = await protectExternalProposalPublic(signKey, gc, new Uint8Array(), build(group), { senderType: "external", senderIndex }, await suiteImpl(gc.cipherSuite));
  const bytes = encodeMLSMessage({ version: gc.version, wireformat: "mls_public_message", publicMessage });
  const staged = await processMessage(group.state, bytes);
  if (staged.kind !== "proposal") failWith(DSErrorCode.internal, "the hub's proposal did not stage as a proposal");
  const state = await merge(group.state, staged);
  await mergeStaged(ctx, {
    response: { protocolVersion: 1, responseBody: { responseType: "ok" } },
    writes: [
      { kind: "checkEpoch", groupId: key, epoch: epochOf(state) },
      { kind: "addProposal", groupId: key, epoch: epochOf(state), ref: staged.pending.ref, proposal: bytes },
    ],
    fanout: [{ message: bytes, group, exceptLeaves: new Set() }],
    group: { next: group.with({ state, members: NO_CHANGE }) },
  });
  return staged.pending.ref;
}
