// Add clients (draft 9.3): a commit adding members by value (plus the stored
// proposals it must reference), and the Welcome messages, each routed to the
// new members whose KeyPackageRef it names (RFC 9420 12.4.3.1).
import { DSErrorCode, encodeMLSMessage } from "../../wire/index.js";
import { byValue, checkCredentialUnchanged, stageGroupUpdate } from "../commit.js";
import { failWith } from "../errors.js";
import { checkMessageSize } from "../limits.js";
import type { FanoutItem, Recipient } from "../fanout.js";
import { bodyOf, ok, requireGroup } from "./common.js";
import type { Operation } from "./index.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

export const addClients: Operation = async (ctx, input) => {
  const { addClientsRequest: req } = bodyOf(input, "add_clients");
  const group = requireGroup(input);
  const s = await stageGroupUpdate(ctx, { ...input, group, update: req.groupUpdate, operation: "add_clients", sender: "member" }, (staged, base) => {
    // Stored proposals come by reference (Section 8); by value only Adds.
    if (byValue(staged).some((p) => p.proposal.proposalType !== "add"))
      failWith(DSErrorCode.invalid_request, "add_clients: the commit must carry no proposals by value other than Add");
    if (staged.added.length === 0) failWith(DSErrorCode.invalid_request, "add_clients: the commit adds no one");
    checkCredentialUnchanged(staged, base, "add_clients");
  });

  const joiners = new Map<string, Recipient>();
  for (const a of s.staged.added) {
    // No token only under the rfc9420 client policy (joinerTokens): the Welcome then goes without one.
    const token = s.next.tokens.get(a.clientId);
    joiners.set(hex(a.keyPackageRef), token !== undefined ? { clientId: a.clientId, token } : { clientId: a.clientId });
  }
  const welcomes: FanoutItem[] = req.welcomeMessages.map((w, i) => {
    if (w.wireformat !== "mls_welcome") failWith(DSErrorCode.invalid_request, `add_clients: welcome_messages[${i}] is a ${w.wireformat}, not a Welcome`);
    const recipients = w.welcome.secrets.map((sec) => {
      const r = joiners.get(hex(sec.newMember));
      if (r === undefined) failWith(DSErrorCode.invalid_request, `add_clients: welcome_messages[${i}] is for a KeyPackage this commit does not add`);
      return r;
    });
    const message = encodeMLSMessage(w);
    checkMessageSize(ctx, "handshake", message.length, `add_clients: welcome_messages[${i}]`);
    return { message, recipients };
  });
  // Every joiner gets its Welcome (RFC 9420 12.4.3.1): one without would be a member that never joins.
  const covered = new Set(req.welcomeMessages.flatMap((w) => (w.wireformat === "mls_welcome" ? w.welcome.secrets.map((sec) => hex(sec.newMember)) : [])));
  const uncovered = [...joiners.keys()].filter((ref) => !covered.has(ref));
  if (uncovered.length > 0) failWith(DSErrorCode.invalid_request, `add_clients: ${uncovered.length} added KeyPackage(s) have no Welcome in welcome_messages`);
  return { response: ok(), writes: s.writes, fanout: [...s.fanout, ...welcomes], group: { next: s.next } };
};
