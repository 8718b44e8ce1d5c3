// Self remove (draft 9.5): a member proposes its own removal — a Remove of its
// own leaf (as -05 says) or a SelfRemove proposal (draft-ietf-mls-extensions).
// The hub stores the proposal; the next commit must include it by reference.
import { epochOf, merge, processMessage } from "../../mls/index.js";
import { DSErrorCode, encodeMLSMessage, isSelfRemoveProposal } from "../../wire/index.js";
import { authenticateMember } from "../auth.js";
import { failWith } from "../errors.js";
import { checkMessageSize } from "../limits.js";
import { NO_CHANGE } from "../groups.js";
import { answerOnly } from "../merge.js";
import { admitProposal, isStoredAlready, withProposedAt } from "../proposals.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const selfRemoveClient: Operation = async (ctx, input) => {
  const { selfRemoveClientRequest: req } = bodyOf(input, "self_remove_client");
  const group = requireGroup(input);
  const m = req.proposal;
  if (m.wireformat !== "mls_public_message" || m.publicMessage.content.contentType !== "proposal")
    failWith(DSErrorCode.invalid_request, "self_remove_client needs a PublicMessage carrying a proposal");
  const content = m.publicMessage.content;
  if (content.epoch !== group.epoch)
    failWith(DSErrorCode.wrong_epoch, `self_remove_client: the proposal is for epoch ${content.epoch}, the group is at epoch ${group.epoch}`, group.epoch);
  const sender = await authenticateMember(input.request, input.raw, group.state);
  if (content.sender.senderType !== "member" || content.sender.leafIndex !== sender.leafIndex)
    failWith(DSErrorCode.authentication_failed, "self_remove_client: the proposal must come from the leaf that signs the request");
  const p = content.proposal;
  const removesSelf = isSelfRemoveProposal(p) || (p.proposalType === "remove" && p.remove.removed === sender.leafIndex);
  if (!removesSelf) failWith(DSErrorCode.invalid_request, "self_remove_client: the proposal must remove the sending client");

  const bytes = encodeMLSMessage(m);
  checkMessageSize(ctx, "handshake", bytes.length, "self_remove_client: the proposal");
  // Sent again (a retry): it is stored already. Another removal of this leaf: refused (docs/protocol.md).
  if (isStoredAlready(group, bytes)) return answerOnly(ok());
  admitProposal(ctx, group, { removes: sender.leafIndex }, "self_remove_client");
  const staged = await processMessage(group.state, bytes);
  if (staged.kind !== "proposal") failWith(DSErrorCode.invalid_request, "self_remove_client: not a proposal");
  const state = await merge(group.state, staged);
  return {
    response: ok(),
    // checkEpoch: another instance may have moved the group on (then this one reloads and judges again).
    writes: [
      { kind: "checkEpoch", groupId: group.key, epoch: epochOf(state) },
      { kind: "addProposal", groupId: group.key, epoch: epochOf(state), ref: staged.pending.ref, proposal: bytes },
    ],
    fanout: [{ message: bytes, group, exceptLeaves: new Set([sender.leafIndex]) }],
    group: { next: group.with({ state, members: NO_CHANGE, proposedAt: withProposedAt(group, staged.pending.ref, ctx.config.now()) }) },
  };
};
