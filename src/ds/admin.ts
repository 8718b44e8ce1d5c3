// DS-initiated proposals (draft Section 8): the hub, listed in every hosted
// group's external_senders, proposes removing or adding a client. The
// proposal goes through the engine like any other, is stored for the epoch
// (the next commit must include it by reference) and is fanned out to every
// member. The operator reaches this through AdminService (src/server/admin.ts).
import type { KeyPackage, Proposal } from "ts-mls";
import { protectExternalProposalPublic } from "ts-mls/messageProtectionPublic.js";
import { createHash } from "node:crypto";
import { clientIdOf, encodeGroupState, epochOf, externalSenderIndex, groupContextBytes, memberByClientId, merge, processMessage, ratchetTreeBytes } from "../mls/index.js";
import { EpochConflictError } from "../store/errors.js";
import { DSErrorCode, encodeMLSMessage } from "../wire/index.js";
import { admitLeaves, keyPackageLeaf } from "./admission.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";
import { groupKey, NO_CHANGE, type HostedGroup } from "./groups.js";
import { suiteImpl } from "./hub-identity.js";
import { mergeStaged } from "./merge.js";
import { acceptsHubAdds, admitProposal, withProposedAt, type NewProposal } from "./proposals.js";

/** The hub proposes removing `clientId`; returns the ProposalRef. */
export function proposeRemoval(ctx: DSContext, groupId: Uint8Array, clientId: string): Promise<Uint8Array> {
  return propose(ctx, groupId, (group) => {
    const m = memberByClientId(group.state, clientId);
    if (m === undefined) failWith(DSErrorCode.unknown_client, `${clientId} is not a member of the group`);
    return { proposal: { proposalType: "remove", remove: { removed: m.leafIndex } }, rule: { removes: m.leafIndex } };
  });
}

/** The hub proposes adding the client of `keyPackage`; returns the ProposalRef. Only in groups whose members take hub Adds. */
export async function proposeAddition(ctx: DSContext, groupId: Uint8Array, keyPackage: KeyPackage): Promise<Uint8Array> {
  // A proposal the next commit must include but the hub would refuse to accept would wedge the group.
  await admitLeaves(ctx, groupId, [keyPackageLeaf(keyPackage)], "propose_addition");
  return propose(ctx, groupId, (group) => {
    if (!acceptsHubAdds(group))
      failWith(DSErrorCode.permission_denied, "this group's members do not take Add proposals from the hub (it has no ds_protocol_version extension); a member adds the client with add_clients");
    const leaf = keyPackage.leafNode;
    return { proposal: { proposalType: "add", add: { keyPackage } }, rule: { adds: { clientId: clientIdOf(leaf.credential), signatureKey: leaf.signaturePublicKey } } };
  });
}

async function propose(ctx: DSContext, groupId: Uint8Array, build: (g: HostedGroup) => { proposal: Proposal; rule: NewProposal }): Promise<Uint8Array> {
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

async function proposeOnce(ctx: DSContext, key: string, build: (g: HostedGroup) => { proposal: Proposal; rule: NewProposal }): Promise<Uint8Array> {
  const group = await ctx.groups.get(key);
  if (group === undefined) failWith(DSErrorCode.unknown_group, "this hub hosts no group with that group id");
  const gc = group.state.groupContext;
  const { publicKey, signKey } = await ctx.hub.keyPair(gc.cipherSuite);
  const senderIndex = externalSenderIndex(group.state, publicKey);
  if (senderIndex === undefined) failWith(DSErrorCode.permission_denied, "this hub is not in the group's external_senders");
  const { proposal, rule } = build(group);
  const { publicMessage } = await protectExternalProposalPublic(signKey, gc, new Uint8Array(), proposal, { senderType: "external", senderIndex }, await suiteImpl(gc.cipherSuite));
  const bytes = encodeMLSMessage({ version: gc.version, wireformat: "mls_public_message", publicMessage });
  // Ed25519 signs deterministically: the same proposal again has the same bytes and ref.
  const stored = [...group.state.proposals.values()].find((p) => Buffer.from(p.message).equals(Buffer.from(bytes)));
  if (stored !== undefined) return stored.ref;
  admitProposal(ctx, group, rule, "the hub's proposal");
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
    group: { next: group.with({ state, members: NO_CHANGE, proposedAt: withProposedAt(group, staged.pending.ref, ctx.config.now()) }) },
  });
  return staged.pending.ref;
}

/** What VerifyGroup reports (AdminService): the invariant state = snapshot + log, checked on one group. */
export interface GroupVerification {
  readonly epoch: bigint;
  /** SHA-256 of the cached state's encoding; undefined when this instance holds none. */
  readonly liveStateSha256?: Uint8Array;
  readonly rebuiltStateSha256: Uint8Array;
  readonly history: readonly { readonly epoch: bigint; readonly groupContextSha256: Uint8Array; readonly ratchetTreeSha256: Uint8Array }[];
}

const sha256 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash("sha256").update(b).digest());

/** Compares the group this instance holds with the same group rebuilt from the store, and rebuilds every epoch kept for joiners. */
export function verifyGroup(ctx: DSContext, groupId: Uint8Array): Promise<GroupVerification> {
  const key = groupKey(groupId);
  // Under the group's lock: no request changes it between the two reads.
  return ctx.groups.exclusive(key, async () => {
    const live = ctx.groups.peek(key);
    const rebuilt = await ctx.groups.rebuiltFromStore(key);
    if (rebuilt === undefined) failWith(DSErrorCode.unknown_group, "this hub hosts no group with that group id");
    const history = [];
    for (const h of await ctx.store.listHistory(key, ctx.config.now())) {
      const s = h.epoch === epochOf(rebuilt) ? rebuilt : await ctx.groups.stateAt(key, h.epoch);
      if (s === undefined) failWith(DSErrorCode.group_state_lost, `epoch ${h.epoch} is kept for joiners but can no longer be rebuilt`);
      history.push({ epoch: h.epoch, groupContextSha256: sha256(groupContextBytes(s)), ratchetTreeSha256: sha256(h.ratchetTree.length > 0 ? h.ratchetTree : ratchetTreeBytes(s)) });
    }
    return {
      epoch: epochOf(rebuilt),
      ...(live !== undefined ? { liveStateSha256: sha256(encodeGroupState(live.state)) } : {}),
      rebuiltStateSha256: sha256(encodeGroupState(rebuilt)),
      history,
    };
  });
}
