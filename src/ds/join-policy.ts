// Who may join a hosted group by external commit (docs/security.md, issue 13
// item 2). RFC 9420 lets anyone holding a GroupInfo join; a hub that serves
// GroupInfos to anyone would then let anyone in under any name. So the hub
// accepts an external commit only when
// - it resyncs the joiner's own leaf: the commit removes a leaf with the same
//   signature key and client identifier as the joiner's new leaf (a member
//   that lost its state), or
// - the group opted into open joins: its GroupContext carries an
//   external_join_policy extension (0xF0A5) saying `open`; the members set or
//   change it with a GroupContextExtensions proposal, like any extension, or
// - it names no policy and the hub's default (policy.externalJoins) is open.
// A removed member's leaf is gone, so it cannot "resync" back in.
import { memberAt, type GroupState, type StagedCommit } from "../mls/index.js";
import { DSErrorCode, readExternalJoinPolicy } from "../wire/index.js";
import type { DSContext } from "./context.js";
import { shown } from "./admission.js";
import { failWith } from "./errors.js";

/** The external-join rule in force for a group: its own extension, else the hub's default. */
export function externalJoinRule(ctx: DSContext, state: GroupState): "resync" | "open" {
  const own = readExternalJoinPolicy(state.groupContext.extensions);
  if (own === "open") return "open";
  if (own === "resync_only") return "resync";
  return ctx.config.policy.externalJoins;
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/** Refuses an external commit the group's rule does not allow. */
export function checkExternalJoin(ctx: DSContext, base: GroupState, staged: StagedCommit): void {
  if (externalJoinRule(ctx, base) === "open") return;
  const joiner = staged.tree.leaf(staged.committer);
  if (joiner === undefined) failWith(DSErrorCode.invalid_request, "external_join: the commit has no joiner leaf");
  const resyncs = staged.removed.some((r) => {
    const old = memberAt(base, r.leafIndex);
    return old !== undefined && old.clientId === joiner.clientId && same(old.signaturePublicKey, joiner.leaf.signaturePublicKey);
  });
  if (!resyncs)
    failWith(
      DSErrorCode.permission_denied,
      `external_join: this group admits external commits only from a member replacing its own leaf (same client and signature key); ${shown(joiner.clientId)} replaces none. A group opens itself with an external_join_policy extension`,
    );
}
