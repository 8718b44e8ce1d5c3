// External join (draft 9.7): a new_member_commit, e.g. a new client joining
// or a member resyncing after state loss (with a Remove of its old leaf). The
// joiner's FanoutAuthToken comes from a fanout_auth extension in its new
// LeafNode, as it has no KeyPackage here (docs/protocol.md).
import { changedTokens } from "../token-map.js";
import { readFanoutAuthToken } from "../../wire/index.js";
import { stageGroupUpdate } from "../commit.js";
import { checkExternalJoin } from "../join-policy.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const externalJoin: Operation = async (ctx, input) => {
  const { externalJoinRequest: req } = bodyOf(input, "external_join");
  const group = requireGroup(input);
  const s = await stageGroupUpdate(ctx, { ...input, group, update: req.groupUpdate, operation: "external_join", sender: "new_member_commit" }, (staged, base) =>
    checkExternalJoin(ctx, base, staged),
  );
  let next = s.next;
  const writes = [...s.writes];
  const leaf = s.staged.tree.leaf(s.staged.committer);
  const token = leaf !== undefined ? readFanoutAuthToken(leaf.leaf.extensions) : undefined;
  if (leaf !== undefined && token !== undefined) {
    next = next.with({ tokens: changedTokens(next.tokens, [], [[leaf.clientId, token.token]]) });
    writes.push({ kind: "setFanoutToken", groupId: group.key, clientId: leaf.clientId, token: token.token });
  }
  // Stored proposals cannot be referenced by an external commit (RFC 9420
  // 12.4.3.2); the epoch change drops them, in the store as in the engine.
  return { response: ok(), writes, fanout: s.fanout, group: { next } };
};
