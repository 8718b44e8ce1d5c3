// Reinitialize (draft 9.10): a commit with a ReInit proposal whose group id
// names another group of this hub, at a protocol version at least this one's.
// After it the group takes no more commits (the engine closes it).
import { DSErrorCode } from "../../wire/index.js";
import { checkCredentialUnchanged, stageGroupUpdate } from "../commit.js";
import { failWith } from "../errors.js";
import { groupKey } from "../groups.js";
import { bodyOf, hubDomainOfGroupId, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const reinitializeGroup: Operation = async (ctx, input) => {
  const { reInitializeGroupRequest: req } = bodyOf(input, "reinitialize_group");
  const group = requireGroup(input);
  let target: Uint8Array | undefined;
  const s = await stageGroupUpdate(ctx, { ...input, group, update: req.commit, operation: "reinitialize_group", sender: "member" }, (staged, base) => {
    const reinit = staged.proposals.find((p) => p.proposal.proposalType === "reinit");
    if (reinit === undefined || reinit.proposal.proposalType !== "reinit") return failWith(DSErrorCode.invalid_request, "reinitialize_group: the commit must carry a ReInit proposal");
    target = reinit.proposal.reinit.groupId;
    if (hubDomainOfGroupId(target) !== ctx.config.domain) failWith(DSErrorCode.invalid_request, `reinitialize_group: the new group id must name this hub (${ctx.config.domain})`);
    if (Buffer.from(target).equals(Buffer.from(base.groupContext.groupId))) failWith(DSErrorCode.invalid_request, "reinitialize_group: the new group id must differ from this group's");
    checkCredentialUnchanged(staged, base, "reinitialize_group");
  });
  const other = await ctx.groups.get(groupKey(target!));
  if (other !== undefined && other.metadata.protocolVersion < group.metadata.protocolVersion)
    failWith(DSErrorCode.invalid_request, "reinitialize_group: the new group has an older MIMI DS protocol version");
  return { response: ok(), writes: s.writes, fanout: s.fanout, group: { next: s.next } };
};
