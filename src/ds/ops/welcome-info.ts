// Welcome info (draft Section 7): the ratchet tree of the epoch a joiner was
// added in, served only to that joiner (joiner_signature with the key of the
// KeyPackage it was added with) and dropped once it has fetched it.
import { DS_PROTOCOL_VERSION, DSErrorCode, decodeRatchetTreeBytes } from "../../wire/index.js";
import { authenticateJoiner } from "../auth.js";
import { failWith } from "../errors.js";
import { decodeEpochHistoryRecord } from "../records.js";
import { bodyOf, requireGroup } from "./common.js";
import type { Operation } from "./index.js";
import type { DSContext } from "../context.js";
import type { HostedGroup } from "../groups.js";
import { ratchetTreeBytes } from "../../mls/index.js";

export const welcomeInfo: Operation = async (ctx, input) => {
  const { welcomeInfoRequest: req } = bodyOf(input, "welcome_info");
  const group = requireGroup(input);
  const entry = await ctx.store.historyForJoiner(group.key, req.keyPackageRef, ctx.config.now());
  if (entry === undefined || entry.epoch !== req.epoch)
    failWith(DSErrorCode.unknown_client, `welcome_info: no epoch ${req.epoch} kept for that KeyPackageRef (fetched already, expired, or never added)`);
  const record = decodeEpochHistoryRecord(entry.groupInfo);
  const joiner = record.joiners.find((j) => Buffer.from(j.keyPackageRef).equals(Buffer.from(req.keyPackageRef)));
  if (joiner === undefined) failWith(DSErrorCode.unknown_client, "welcome_info: that KeyPackageRef is not a joiner of this epoch");
  const auth = input.request.authenticationData;
  if (auth.authType === "joiner_signature" && !Buffer.from(auth.keyPackageRef).equals(Buffer.from(req.keyPackageRef)))
    failWith(DSErrorCode.authentication_failed, "welcome_info: the joiner_signature names another KeyPackageRef");
  await authenticateJoiner(input.request, input.raw, group.state, joiner.signaturePublicKey);
  const tree = entry.ratchetTree.length > 0 ? entry.ratchetTree : await treeOfEpoch(ctx, group, entry.epoch);
  return {
    response: { protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "welcome_info", ratchetTree: decodeRatchetTreeBytes(tree) } },
    writes: [{ kind: "removeHistoryJoiner", groupId: group.key, keyPackageRef: req.keyPackageRef, epoch: entry.epoch }],
    fanout: [],
  };
};

/** The tree of an epoch kept by reference: the current state's, or an earlier one rebuilt from the store. */
async function treeOfEpoch(ctx: DSContext, group: HostedGroup, epoch: bigint): Promise<Uint8Array> {
  const state = epoch === group.epoch ? group.state : await ctx.groups.stateAt(group.key, epoch);
  if (state === undefined) failWith(DSErrorCode.unknown_client, `welcome_info: epoch ${epoch} can no longer be rebuilt`);
  return ratchetTreeBytes(state);
}
