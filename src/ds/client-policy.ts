// The hub's client policy (docs/interop.md): which clients it serves.
//
// "mimi" (the default) is draft -05: KeyPackages carry a FanoutAuth token,
// groups carry ds_protocol_version, every request is signed by its sender
// (client_signature).
//
// "rfc9420" also serves standard RFC 9420 clients that implement no part of
// -05 (e.g. CoreCrypto/OpenMLS): they cannot add KeyPackage or GroupContext
// extensions and cannot sign DSRequests, because their libraries keep the
// signature key to themselves. What the hub relies on instead:
// - a commit or proposal (PublicMessage) is signed by its sender's leaf in
//   the MLS framing; the engine verifies that signature, so an anonymous
//   DSRequest carrying one is attributed to that leaf;
// - a GroupInfo is signed by its signer's leaf (create_group);
// - an anonymous application message proxied by a peer DS is taken only when
//   that (mutual-TLS-authenticated) domain has a member in the group;
// - fanout goes to the group's membership as the hub keeps it, without tokens;
//   guest DSs under this policy deliver token-less fanout to their registered
//   clients on the strength of the hub's mutual-TLS identity and signature.
// What is lost is listed in docs/interop.md ("What the rfc9420 policy gives up").
import type { GroupState, Member } from "../mls/index.js";
import { memberAt } from "../mls/index.js";
import { DSErrorCode, type DSRequest } from "../wire/index.js";
import { authenticateMember } from "./auth.js";
import type { DSConfig } from "./context.js";
import { failWith } from "./errors.js";

export type ClientPolicy = "mimi" | "rfc9420";

export const CLIENT_POLICIES: readonly ClientPolicy[] = ["mimi", "rfc9420"];

/** Whether the hub also serves standard RFC 9420 clients (no MIMI extensions, unsigned DSRequests). */
export const servesStandardClients = (config: Pick<DSConfig, "clientPolicy">): boolean => config.clientPolicy === "rfc9420";

/**
 * The member that sent a request carrying a PublicMessage of leaf `leafIndex`:
 * its client_signature is checked as always; under "rfc9420" an anonymous
 * request is taken to come from that leaf, whose signature on the message
 * itself the engine verifies before anything is accepted.
 */
export async function authenticateMessageSender(config: DSConfig, req: DSRequest, raw: Uint8Array, state: GroupState, leafIndex: number, operation: string): Promise<Member> {
  if (req.authenticationData.authType === "anonymous" && servesStandardClients(config)) {
    const member = memberAt(state, leafIndex);
    if (member === undefined) failWith(DSErrorCode.permission_denied, `${operation}: leaf ${leafIndex} is not a member of the group`);
    return member;
  }
  return authenticateMember(req, raw, state);
}
