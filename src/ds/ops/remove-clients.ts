// Remove clients (draft 9.4): a commit removing other members by value. A
// client leaves with self_remove_client instead.
import { DSErrorCode } from "../../wire/index.js";
import { byValue, checkCredentialUnchanged, stageGroupUpdate } from "../commit.js";
import { failWith } from "../errors.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const removeClients: Operation = async (ctx, input) => {
  const { removeClientsRequest: req } = bodyOf(input, "remove_clients");
  const group = requireGroup(input);
  const s = await stageGroupUpdate(ctx, { ...input, group, update: req.groupUpdate, operation: "remove_clients", sender: "member" }, (staged, base) => {
    // Stored proposals come by reference (Section 8); by value only Removes.
    if (byValue(staged).some((p) => p.proposal.proposalType !== "remove"))
      failWith(DSErrorCode.invalid_request, "remove_clients: the commit must carry no proposals by value other than Remove");
    if (staged.removed.length === 0) failWith(DSErrorCode.invalid_request, "remove_clients: the commit removes no one");
    if (staged.removed.some((r) => r.leafIndex === staged.committer))
      failWith(DSErrorCode.invalid_request, "remove_clients: a client cannot remove itself; use self_remove_client");
    checkCredentialUnchanged(staged, base, "remove_clients");
  });
  return { response: ok(), writes: s.writes, fanout: s.fanout, group: { next: s.next } };
};
