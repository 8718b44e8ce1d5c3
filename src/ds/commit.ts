// Staging of every request that carries an MLSGroupUpdate (draft Section 7):
// the commit must be a PublicMessage commit for the current epoch, from the
// authenticated sender, including every stored proposal by reference
// (Section 8); the engine validates it as a member would; the PartialGroupInfo
// must complete a GroupInfo the committer signed. The operation modules add
// their own rules through `check` and turn the result into a StagedRequest.
import type { KeyPackage, MLSMessage } from "ts-mls";
import {
  encodeGroupState,
  epochOf,
  memberAt,
  merge,
  processMessage,
  type GroupState,
  type Member,
  unreferencedProposals,
  type StagedCommit,
} from "../mls/index.js";
import type { WriteOp } from "../store/port.js";
import {
  credentialCodec,
  DSErrorCode,
  encodeMLSMessage,
  encodeWith,
  partialGroupInfoCodec,
  readFanoutAuthToken,
  type DSRequest,
  type MLSGroupUpdate,
} from "../wire/index.js";
import { checkGroupInfoExtensions } from "./group-info.js";
import { authenticateMessageSender, servesStandardClients } from "./client-policy.js";
import { admitLeaves, incomingLeaves } from "./admission.js";
import { changedTokens } from "./token-map.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";
import { membershipChange, type HostedGroup } from "./groups.js";
import { feedChanges, type FanoutItem } from "./fanout.js";
import { missingRequiredProposals } from "./proposals.js";
import { checkMessageSize } from "./limits.js";
import { encodeEpochHistoryRecord, encodeEpochLogRecord } from "./records.js";

export interface GroupUpdateInput {
  readonly request: DSRequest;
  readonly raw: Uint8Array;
  readonly group: HostedGroup;
  readonly update: MLSGroupUpdate;
  /** The operation's name, for error messages. */
  readonly operation: string;
  /** Who may send it: a member (client_signature) or an external joiner (new_member_commit). */
  readonly sender: "member" | "new_member_commit";
}

export interface StagedGroupUpdate {
  readonly staged: StagedCommit;
  /** The authenticated sender (members only). */
  readonly sender?: Member;
  readonly next: HostedGroup;
  readonly writes: WriteOp[];
  readonly fanout: FanoutItem[];
}

/** The commit message of an MLSGroupUpdate, checked to be a PublicMessage commit. */
export function commitOf(update: MLSGroupUpdate, operation: string): MLSMessage & { wireformat: "mls_public_message" } {
  const m = update.commit;
  if (m.wireformat !== "mls_public_message") failWith(DSErrorCode.invalid_request, `${operation}: the MLSGroupUpdate must carry a PublicMessage, not ${m.wireformat}`);
  if (m.publicMessage.content.contentType !== "commit")
    failWith(DSErrorCode.invalid_request, `${operation}: the MLSGroupUpdate must carry a commit, not a ${m.publicMessage.content.contentType}`);
  return m;
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/** Rules shared by member commits: the sender's credential does not change (draft 9.3, 9.4). */
export function checkCredentialUnchanged(staged: StagedCommit, base: GroupState, operation: string): void {
  const before = memberAt(base, staged.committer);
  const after = staged.tree.leaf(staged.committer);
  if (before === undefined || after === undefined) return;
  if (!sameBytes(encodeWith(credentialCodec, before.credential), encodeWith(credentialCodec, after.leaf.credential)))
    failWith(DSErrorCode.invalid_request, `${operation}: the commit must not change the sender's credential`);
}

/** Proposals the commit carries by value (as opposed to stored proposals it references). */
export const byValue = (staged: StagedCommit) => staged.proposals.filter((p) => p.ref === undefined);

/**
 * Every KeyPackage added must carry a FanoutAuth extension (draft 4.6, 9.3);
 * returns the tokens. With `required` false (the rfc9420 client policy) a
 * KeyPackage without one is accepted and its client gets no token.
 */
export function joinerTokens(added: readonly { clientId: string; keyPackage: KeyPackage }[], operation: string, required = true): Map<string, Uint8Array> {
  const tokens = new Map<string, Uint8Array>();
  for (const a of added) {
    const t = readFanoutAuthToken(a.keyPackage.extensions);
    if (t === undefined) {
      if (!required) continue;
      failWith(DSErrorCode.invalid_request, `${operation}: the KeyPackage of ${a.clientId} has no FanoutAuth extension`);
    }
    tokens.set(a.clientId, t.token);
  }
  return tokens;
}

export async function stageGroupUpdate(
  ctx: DSContext,
  input: GroupUpdateInput,
  check: (staged: StagedCommit, base: GroupState) => void,
): Promise<StagedGroupUpdate> {
  const { group, update, operation } = input;
  const base = group.state;
  const commit = commitOf(update, operation);
  const sender = commit.publicMessage.content.sender;
  let member: Member | undefined;
  if (input.sender === "member") {
    if (sender.senderType !== "member") failWith(DSErrorCode.invalid_request, `${operation}: the commit must come from a member, not ${sender.senderType}`);
    // Stale requests are told the current epoch before anything else.
    if (commit.publicMessage.content.epoch !== epochOf(base))
      failWith(DSErrorCode.wrong_epoch, `${operation}: the commit is for epoch ${commit.publicMessage.content.epoch}, the group is at epoch ${epochOf(base)}`, epochOf(base));
    member = await authenticateMessageSender(ctx.config, input.request, input.raw, base, sender.leafIndex, operation);
    if (member.leafIndex !== sender.leafIndex)
      failWith(DSErrorCode.authentication_failed, `${operation}: the request is signed by leaf ${member.leafIndex} but the commit by leaf ${sender.leafIndex}`);
  } else if (sender.senderType !== "new_member_commit") {
    failWith(DSErrorCode.invalid_request, `${operation}: the commit must have sender type new_member_commit`);
  }

  const commitBytes = encodeMLSMessage(commit);
  checkMessageSize(ctx, "handshake", commitBytes.length, `${operation}: the commit`);
  const staged = await processMessage(base, commitBytes);
  if (staged.kind !== "commit") failWith(DSErrorCode.invalid_request, `${operation}: not a commit`);

  // Section 8: a member's commit includes every stored proposal by reference.
  // External commits cannot (RFC 9420 12.4.3.2); their epoch change drops them.
  // Proposals past their grace period are no longer required (src/ds/proposals.ts).
  if (input.sender === "member") {
    const missing = missingRequiredProposals(ctx, group, staged, unreferencedProposals(staged));
    if (missing.length > 0)
      failWith(DSErrorCode.missing_proposals, `${operation}: the commit must include the stored proposals by reference (${base.proposals.size} stored); ${missing.length} required ones missing`);
  }
  // Joiners need a Welcome, and only add_clients carries them: a commit that adds
  // (e.g. a pending hub Add by reference) in any other operation would add
  // members who never learn of it.
  if (operation !== "add_clients" && staged.added.length > 0)
    failWith(DSErrorCode.invalid_request, `${operation}: the commit adds ${staged.added.length} member(s) (by reference); send it as add_clients with their Welcome`);
  check(staged, base);
  await admitLeaves(ctx, base.groupContext.groupId, incomingLeaves(staged), operation);

  const partialGroupInfo = encodeWith(partialGroupInfoCodec, update.partialGroupInfo);
  const nextState = await merge(base, staged, partialGroupInfo);
  checkGroupInfoExtensions(nextState, update.partialGroupInfo.groupInfoExtensions, operation);

  // FanoutAuthTokens: joiners bring theirs in their KeyPackages; removed members' go.
  const writes: WriteOp[] = [];
  const added = joinerTokens(staged.added, operation, !servesStandardClients(ctx.config));
  const removedWithToken = staged.removed.filter((r) => group.tokens.has(r.clientId));
  // Changed only when it changes (most commits, updates, leave every token as it is),
  // sharing the untouched part (src/ds/token-map.ts).
  const tokens = added.size > 0 || removedWithToken.length > 0 ? changedTokens(group.tokens, removedWithToken.map((r) => r.clientId), added) : undefined;
  for (const r of removedWithToken) writes.push({ kind: "removeFanoutToken", groupId: group.key, clientId: r.clientId });
  for (const [clientId, token] of added) writes.push({ kind: "setFanoutToken", groupId: group.key, clientId, token });

  const snapshot = group.logLength + 1 >= ctx.config.snapshotInterval;
  writes.unshift({
    kind: "advanceGroup",
    groupId: group.key,
    expectedEpoch: epochOf(base),
    // The pending proposals go into the log with the commit: replay needs them (DESIGN 10).
    logEntry: encodeEpochLogRecord({ proposals: [...base.proposals.values()].map((p) => p.message), message: commitBytes, partialGroupInfo }),
    ...(snapshot ? { snapshot: encodeGroupState(nextState) } : {}),
  });

  // Section 7: joiners fetch the new epoch's tree later. The entry names the
  // epoch; its tree comes from the state of that epoch (the store keeps the
  // snapshot and log to rebuild it), so a commit costs the size of the commit.
  if (staged.added.length > 0) {
    writes.push({
      kind: "addHistory",
      groupId: group.key,
      epoch: epochOf(nextState),
      groupInfo: encodeEpochHistoryRecord({
        groupInfo: nextState.groupInfo ?? new Uint8Array(),
        joiners: staged.added.map((a) => ({ keyPackageRef: a.keyPackageRef, leafIndex: a.leafIndex, signaturePublicKey: a.keyPackage.leafNode.signaturePublicKey })),
      }),
      joiners: staged.added.map((a) => a.keyPackageRef),
      expiresAt: ctx.config.now() + ctx.config.historyRetentionMs,
    });
  }

  const change = membershipChange(staged);
  writes.push(...feedChanges(ctx.hub, group.key, change.added.map((a) => a.clientId), change.removed.map((r) => r.clientId)));

  // Everyone of the old epoch but the committer learns of the commit (removed members included).
  const except = new Set<number>(staged.external ? [] : [staged.committer]);
  const fanout: FanoutItem[] = [{ message: commitBytes, group, exceptLeaves: except }];
  const next = group.with({ state: nextState, members: change, ...(tokens !== undefined ? { tokens } : {}), logLength: snapshot ? 0 : group.logLength + 1 });
  return { staged, ...(member !== undefined ? { sender: member } : {}), next, writes, fanout };
}
