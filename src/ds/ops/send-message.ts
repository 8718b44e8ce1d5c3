// Send message (draft 9.8): a PrivateMessage of content type application,
// fanned out to every other member. The DS cannot read it; the request's
// client_signature authenticates the sender. Accepted epochs: the current one
// and `applicationEpochWindow` before it (members still finishing a commit).
import { DSErrorCode, encodeMLSMessage } from "../../wire/index.js";
import { authenticateMember } from "../auth.js";
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
  const sender = await authenticateMember(input.request, input.raw, group.state);
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
    fanout: [{ message, group, exceptLeaves: new Set([sender.leafIndex]) }],
  };
};
