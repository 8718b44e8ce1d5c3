// Update client (draft 9.6): a commit with an UpdatePath and no proposals by
// value (stored ones by reference), optionally replacing the sender's
// FanoutAuthToken.
import { changedTokens } from "../token-map.js";
import { memberAt } from "../../mls/index.js";
import { DSErrorCode } from "../../wire/index.js";
import { admitOwnToken } from "../admission.js";
import { byValue, stageGroupUpdate } from "../commit.js";
import { failWith } from "../errors.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const updateClient: Operation = async (ctx, input) => {
  const { updateClientRequest: req } = bodyOf(input, "update_client");
  const group = requireGroup(input);
  const s = await stageGroupUpdate(ctx, { ...input, group, update: req.groupUpdate, operation: "update_client", sender: "member" }, (staged, base) => {
    if (!staged.hasPath) failWith(DSErrorCode.invalid_request, "update_client: the commit must carry an UpdatePath");
    if (byValue(staged).length > 0) failWith(DSErrorCode.invalid_request, "update_client: the commit must not carry proposals by value");
    // A changed credential must still name the same client (our rule for the draft's TODO).
    const before = memberAt(base, staged.committer);
    const after = staged.tree.leaf(staged.committer);
    if (before !== undefined && after !== undefined && before.clientId !== after.clientId)
      failWith(DSErrorCode.invalid_request, `update_client: the new credential names ${after.clientId}, not ${before.clientId}`);
  });
  let next = s.next;
  const writes = [...s.writes];
  if (req.token !== undefined && s.sender !== undefined) {
    const leaf = s.staged.tree.leaf(s.staged.committer)!.leaf;
    await admitOwnToken(ctx, group.state.groupContext.groupId, s.sender.clientId, leaf.signaturePublicKey, leaf.credential, req.token.token, "update_client");
    next = next.with({ tokens: changedTokens(next.tokens, [], [[s.sender.clientId, req.token.token]]) });
    writes.push({ kind: "setFanoutToken", groupId: group.key, clientId: s.sender.clientId, token: req.token.token });
  }
  return { response: ok(), writes, fanout: s.fanout, group: { next } };
};
