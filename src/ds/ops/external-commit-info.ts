// External commit info (draft 9.7 needs it, -05 does not name it): the
// current GroupInfo (with external_pub, from the last committer's
// PartialGroupInfo) and ratchet tree.
import { groupInfoMessage, ratchetTreeBytes } from "../../mls/index.js";
import { DS_PROTOCOL_VERSION, DSErrorCode, decodeMLSMessage, decodeRatchetTreeBytes } from "../../wire/index.js";
import { authenticateMember } from "../auth.js";
import { failWith } from "../errors.js";
import { bodyOf, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const externalCommitInfo: Operation = async (ctx, input) => {
  bodyOf(input, "external_commit_info");
  const group = requireGroup(input);
  if (!ctx.config.openExternalJoin) await authenticateMember(input.request, input.raw, group.state);
  const gi = groupInfoMessage(group.state);
  if (gi === undefined) failWith(DSErrorCode.invalid_request, "external_commit_info: no GroupInfo is known for the current epoch");
  return {
    response: {
      protocolVersion: DS_PROTOCOL_VERSION,
      responseBody: { responseType: "external_commit_info", groupInfo: decodeMLSMessage(gi), ratchetTree: decodeRatchetTreeBytes(ratchetTreeBytes(group.state)) },
    },
    writes: [],
    fanout: [],
  };
};
