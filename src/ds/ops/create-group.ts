// Create group (the draft names the operation but gives no body; docs/protocol.md):
// the creator's signed GroupInfo and ratchet tree seed the hub's public state.
import { encodeGroupState, epochOf, externalSenderIndex, members, seedFromGroupInfo, groupInfoFromMlsMessage } from "../../mls/index.js";
import { DS_PROTOCOL_VERSION, DSErrorCode, encodeMLSMessage, readDSProtocolVersion } from "../../wire/index.js";
import { checkGroupInfoExtensions } from "../group-info.js";
import { authenticateMessageSender, servesStandardClients } from "../client-policy.js";
import { admitLeaves, seedLeaves } from "../admission.js";
import { checkMessageSize } from "../limits.js";
import { failWith } from "../errors.js";
import { groupKey, HostedGroup } from "../groups.js";
import { encodeGroupMetadata } from "../records.js";
import { bodyOf, hubDomainOfGroupId, ok } from "./common.js";
import { feedChanges } from "../fanout.js";
import type { Operation } from "./index.js";

export const createGroup: Operation = async (ctx, input) => {
  const { createGroupRequest: req } = bodyOf(input, "create_group");
  if (input.group !== undefined) failWith(DSErrorCode.group_exists, "a group with this group id already exists on this hub");
  if (req.groupInfo.wireformat !== "mls_group_info") failWith(DSErrorCode.invalid_request, `create_group needs an MLSMessage of wire format mls_group_info, not ${req.groupInfo.wireformat}`);
  const groupId = req.groupInfo.groupInfo.groupContext.groupId;
  if (hubDomainOfGroupId(groupId) !== ctx.config.domain)
    failWith(DSErrorCode.invalid_request, `the group id must name this hub (<id>@${ctx.config.domain}); request one with request_group_id`);

  const groupInfo = encodeMLSMessage(req.groupInfo);
  checkMessageSize(ctx, "handshake", groupInfo.length + req.ratchetTree.length, "create_group: the GroupInfo and ratchet tree");
  const state = await seedFromGroupInfo(groupInfoFromMlsMessage(groupInfo), req.ratchetTree, ctx.config.engine);
  const gc = state.groupContext;
  // Under the rfc9420 policy a group of standard clients carries no ds_protocol_version; it speaks this hub's.
  const version = readDSProtocolVersion(gc.extensions) ?? (servesStandardClients(ctx.config) ? DS_PROTOCOL_VERSION : undefined);
  if (version === undefined) failWith(DSErrorCode.invalid_request, "the GroupContext has no ds_protocol_version extension (docs/protocol.md)");
  if (version !== DS_PROTOCOL_VERSION) failWith(DSErrorCode.unsupported_version, `the group uses MIMI DS protocol version ${version}; this hub speaks ${DS_PROTOCOL_VERSION}`);
  const hubKey = (await ctx.hub.externalSender(gc.cipherSuite)).signaturePublicKey;
  if (externalSenderIndex(state, hubKey) === undefined)
    failWith(DSErrorCode.invalid_request, "the group's external_senders extension must list this hub's signature key (draft Section 8)");

  checkGroupInfoExtensions(state, req.groupInfo.groupInfo.extensions, "create_group");

  // The creator signs the request with the key of the leaf that signed the
  // GroupInfo (rfc9420 policy: or sends it anonymously; the GroupInfo's
  // signature, verified when seeding, names the creator).
  const signer = req.groupInfo.groupInfo.signer;
  const creator = await authenticateMessageSender(ctx.config, input.request, input.raw, state, signer, "create_group");
  if (creator.leafIndex !== signer) failWith(DSErrorCode.authentication_failed, `the request is signed by leaf ${creator.leafIndex}, the GroupInfo by leaf ${signer}`);
  // A standard client has no FanoutAuthToken: an empty creator_token stores none.
  const creatorToken = req.creatorToken.token.length === 0 && servesStandardClients(ctx.config) ? undefined : req.creatorToken.token;
  await admitLeaves(ctx, groupId, seedLeaves(state, creator.leafIndex, creatorToken), "create_group");

  const key = groupKey(groupId);
  const metadata = { protocolVersion: version, creator: creator.clientId };
  const tokens = new Map(creatorToken !== undefined ? [[creator.clientId, creatorToken]] : []);
  return {
    response: ok(),
    writes: [
      {
        kind: "createGroup",
        groupId: key,
        epoch: epochOf(state),
        snapshot: encodeGroupState(state),
        metadata: encodeGroupMetadata(metadata),
        // Groups per creator (docs/security.md): counted by the store, in this transaction.
        owner: { clientId: creator.clientId, maxGroups: ctx.config.policy.maxGroupsPerCreator },
      },
      ...(creatorToken !== undefined ? [{ kind: "setFanoutToken" as const, groupId: key, clientId: creator.clientId, token: creatorToken }] : []),
      ...feedChanges(ctx.hub, key, [...members(state)].map((m) => m.clientId), []),
    ],
    fanout: [],
    group: { next: new HostedGroup(key, state, metadata, tokens, 0) },
  };
};
