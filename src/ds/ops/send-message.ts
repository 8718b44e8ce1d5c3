// Send message (draft 9.8): a PrivateMessage of content type application,
// fanned out to every other member. The DS cannot read it; the request's
// client_signature authenticates the sender. Accepted epochs: the current one
// and `applicationEpochWindow` before it (members still finishing a commit).
import { DSErrorCode, encodeMLSMessage } from "../../wire/index.js";
import { authenticateMember } from "../auth.js";
import { servesStandardClients } from "../client-policy.js";
import { failWith } from "../errors.js";
import { checkMessageSize } from "../limits.js";
import { sentMessageKey } from "../replay.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

export const sendMessage: Operation = async (ctx, input) => {
  const { sendMessageRequest: req } = bodyOf(input, "send_message");
  const group = requireGroup(input);
  const m = req.applicationMessage;
  if (m.wireformat !== "mls_private_message") failWith(DSErrorCode.invalid_request, `send_message needs a PrivateMessage, not ${m.wireformat}`);
  if (m.privateMessage.contentType !== "application")
    failWith(DSErrorCode.invalid_request, `send_message needs content type application, not ${m.privateMessage.contentType}; handshake messages go as PublicMessages`);
  const epoch = m.privateMessage.epoch;
  const current = group.epoch;
  if (epoch > current || current - epoch > BigInt(ctx.config.applicationEpochWindow))
    failWith(DSErrorCode.wrong_epoch, `send_message: the message is for epoch ${epoch}, the group is at epoch ${current}`, current);
  const message = encodeMLSMessage(m);
  checkMessageSize(ctx, "application", message.length, "send_message: the application message");
  // Under the rfc9420 policy a client that cannot sign DSRequests sends
  // anonymously: the hub cannot tell who (the sender is encrypted), so every
  // member gets the message, the sender included (docs/interop.md).
  const anonymous = input.request.authenticationData.authType === "anonymous" && servesStandardClients(ctx.config);
  // A peer DS (mutual TLS) proxies anonymous messages only for groups where it has clients.
  const peer = input.context.peerDomain?.toLowerCase();
  if (anonymous && peer !== undefined && !group.byDomain(ctx.config.domain).has(peer))
    failWith(DSErrorCode.permission_denied, `send_message: ${peer} has no member in this group`);
  const except = anonymous ? new Set<number>() : new Set([(await authenticateMember(input.request, input.raw, group.state)).leafIndex]);
  const oldestAccepted = current - BigInt(ctx.config.applicationEpochWindow);
  return {
    response: ok(),
    // Another instance may have moved the group on; then this one reloads and judges again.
    // The same message accepted again (a replay, or a client retrying) answers ok and is
    // not fanned out twice: the record lives while its epoch is accepted (docs/security.md).
    writes: [
      { kind: "checkEpoch", groupId: group.key, epoch: current },
      {
        kind: "recordRequest",
        key: sentMessageKey(message),
        groupId: group.key,
        epoch,
        ...(oldestAccepted > 0n ? { forgetBefore: oldestAccepted } : {}),
        expiresAt: ctx.config.now() + ctx.config.policy.sendReplayRetentionMs,
      },
    ],
    fanout: [{ message, group, exceptLeaves: except }],
  };
};
