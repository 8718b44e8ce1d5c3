// Delete group (draft 9.2): a commit removing every member but the committer;
// the hub forwards it to the removed members and forgets the group.
import { DSErrorCode } from "../../wire/index.js";
import { byValue, stageGroupUpdate } from "../commit.js";
import { failWith } from "../errors.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const deleteGroup: Operation = async (ctx, input) => {
  const { deleteGroupRequest: req } = bodyOf(input, "delete_group");
  const group = requireGroup(input);
  const s = await stageGroupUpdate(ctx, { ...input, group, update: req.groupUpdate, operation: "delete_group", sender: "member" }, (staged) => {
    if (byValue(staged).some((p) => p.proposal.proposalType !== "remove"))
      failWith(DSErrorCode.invalid_request, "delete_group: the commit may carry only Remove proposals");
    if (staged.tree.memberCount !== 1)
      failWith(DSErrorCode.invalid_request, `delete_group: the commit must remove every member but the committer (${staged.tree.memberCount - 1} would remain)`);
  });
  // The epoch precondition keeps delete ordered with concurrent commits.
  return {
    response: ok(),
    // Local members keep receiving what the feed holds up to the delete commit.
    // The tombstone keeps the id taken: a replayed create_group does not bring the group back.
    writes: [
      { kind: "deleteGroup", groupId: group.key, expectedEpoch: group.epoch, tombstoneUntil: ctx.config.now() + ctx.config.deletedGroupRetentionMs },
      { kind: "leaveFeed", groupId: group.key },
    ],
    fanout: s.fanout,
    group: { evict: group.key },
  };
};
