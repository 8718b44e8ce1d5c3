// Who may be a member of a hosted group (docs/security.md, issue 13 items 2,
// 6, 9 and 10). Every leaf a request brings into a group or changes is held to
// the policy before anything is staged:
// - its credential is at most maxCredentialBytes;
// - its domain is this DS's or a configured peer's (foreignMembers);
// - a client of this domain must be registered here and the leaf must carry
//   the signature key it registered, so no one can pose as it inside a group;
// - a client of this domain brought in by someone else (an Add) must present
//   a FanoutAuthToken this DS issued to it and still accepts, and must not
//   block the group: what its guest DS would check for a remote hub.
// Clients of other domains are checked by their own DS, which sees their
// FanoutAuthToken on every DSFanoutRequest (src/delivery/guest.ts).
import type { Credential, KeyPackage } from "ts-mls";
import { clientIdOf, domainOf, members, type GroupState, type StagedCommit } from "../mls/index.js";
import { credentialCodec, DSErrorCode, encodeWith, readFanoutAuthToken } from "../wire/index.js";
import { servesStandardClients } from "./client-policy.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";

/** A leaf entering a group or changing in it. */
export interface IncomingLeaf {
  readonly clientId: string;
  readonly credential: Credential;
  readonly signaturePublicKey: Uint8Array;
  /** The FanoutAuthToken that comes with it (from its KeyPackage, LeafNode or the request). */
  readonly token?: Uint8Array;
  /** Brought in by another member (Add): it must present a token this DS accepts. */
  readonly addedByOther: boolean;
  /** A member changing its own leaf under the same name is already in: the domain rule is not asked again. */
  readonly alreadyMember?: boolean;
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/** A client identifier as error messages show it: at most 120 characters (they travel in RPC headers). */
export const shown = (clientId: string): string => (clientId.length <= 120 ? clientId : `${clientId.slice(0, 100)}... (${clientId.length} characters)`);

/** Every leaf a staged commit adds, joins with or changes. */
export function incomingLeaves(staged: StagedCommit): IncomingLeaf[] {
  const out: IncomingLeaf[] = [];
  for (const a of staged.added) {
    const leaf = a.keyPackage.leafNode;
    const token = readFanoutAuthToken(a.keyPackage.extensions)?.token;
    out.push({ clientId: a.clientId, credential: leaf.credential, signaturePublicKey: leaf.signaturePublicKey, addedByOther: true, ...(token !== undefined ? { token } : {}) });
  }
  const own = [
    ...(staged.externalJoiner !== undefined ? [{ leafIndex: staged.externalJoiner.leafIndex, alreadyMember: false }] : []),
    ...staged.updated.map((u) => ({ leafIndex: u.leafIndex, alreadyMember: u.previousClientId === u.clientId })),
  ];
  for (const { leafIndex, alreadyMember } of own) {
    const entry = staged.tree.leaf(leafIndex);
    if (entry === undefined) continue;
    const token = leafIndex === staged.externalJoiner?.leafIndex ? readFanoutAuthToken(entry.leaf.extensions)?.token : undefined;
    out.push({ clientId: entry.clientId, credential: entry.leaf.credential, signaturePublicKey: entry.leaf.signaturePublicKey, addedByOther: false, alreadyMember, ...(token !== undefined ? { token } : {}) });
  }
  return out;
}

/**
 * The members of a group being created: the creator (leaf `creator`) with its
 * token, and everyone else as brought in by the creator, without a token.
 */
export function seedLeaves(state: GroupState, creator: number, creatorToken: Uint8Array | undefined): IncomingLeaf[] {
  return [...members(state)].map((m) => ({
    clientId: m.clientId,
    credential: m.credential,
    signaturePublicKey: m.signaturePublicKey,
    addedByOther: m.leafIndex !== creator,
    ...(m.leafIndex === creator && creatorToken !== undefined ? { token: creatorToken } : {}),
  }));
}

/** Whether a client identifier names a client of this DS (identifiers without a domain do). */
export const isLocal = (ctx: DSContext, clientId: string): boolean => (domainOf(clientId) ?? ctx.config.domain) === ctx.config.domain;

/** Refuses the request unless every leaf may be in group `groupId` under the policy. */
export async function admitLeaves(ctx: DSContext, groupId: Uint8Array, leaves: readonly IncomingLeaf[], operation: string): Promise<void> {
  const policy = ctx.config.policy;
  for (const l of leaves) {
    const size = encodeWith(credentialCodec, l.credential).length;
    if (size > policy.maxCredentialBytes)
      failWith(DSErrorCode.too_large, `${operation}: the credential of ${shown(l.clientId)} has ${size} bytes; this hub accepts at most ${policy.maxCredentialBytes}`);
    const domain = domainOf(l.clientId) ?? ctx.config.domain;
    if (domain !== ctx.config.domain && l.alreadyMember !== true && policy.foreignMembers === "refuse" && ctx.peers?.has(domain) !== true)
      failWith(DSErrorCode.permission_denied, `${operation}: ${shown(l.clientId)} is a client of ${domain}, which is neither ${ctx.config.domain} nor a peer of it`);
  }
  if (policy.localClients === "unchecked") return;
  await Promise.all(leaves.filter((l) => isLocal(ctx, l.clientId)).map((l) => admitLocal(ctx, groupId, l, operation)));
}

async function admitLocal(ctx: DSContext, groupId: Uint8Array, l: IncomingLeaf, operation: string): Promise<void> {
  if (ctx.localClients === undefined) failWith(DSErrorCode.unavailable, `${operation}: this DS cannot check its own clients (no client directory configured)`);
  const reg = await ctx.localClients.registration(l.clientId);
  if (reg === undefined) failWith(DSErrorCode.unknown_client, `${operation}: ${shown(l.clientId)} is not a registered client of ${ctx.config.domain}`);
  if (!sameBytes(reg.signaturePublicKey, l.signaturePublicKey))
    failWith(DSErrorCode.permission_denied, `${operation}: the leaf of ${shown(l.clientId)} carries a signature key other than the one that client registered`);
  if (l.token === undefined) {
    // Under the rfc9420 client policy standard clients carry no token: their registered key is what admits them.
    if (l.addedByOther && !servesStandardClients(ctx.config))
      failWith(DSErrorCode.invalid_fanout_token, `${operation}: ${shown(l.clientId)} comes without a FanoutAuthToken; a client of ${ctx.config.domain} is added only with a KeyPackage carrying one`);
    return;
  }
  const check = reg.checkRecipient(l.token, groupId);
  if (check === "invalid_token") failWith(DSErrorCode.invalid_fanout_token, `${operation}: the FanoutAuthToken of ${shown(l.clientId)} was not issued by ${ctx.config.domain} to that client, or is revoked`);
  if (check === "blocked") failWith(DSErrorCode.blocked, `${operation}: ${shown(l.clientId)} blocks this group or this hub`);
}

/** A token a member sets for itself (update_client): it must be one this DS accepts for it. */
export async function admitOwnToken(ctx: DSContext, groupId: Uint8Array, clientId: string, signaturePublicKey: Uint8Array, credential: Credential, token: Uint8Array, operation: string): Promise<void> {
  await admitLeaves(ctx, groupId, [{ clientId, credential, signaturePublicKey, token, addedByOther: false, alreadyMember: true }], operation);
}

/** The leaf a KeyPackage would add (the hub's own Add proposals are held to the same rules as a member's). */
export function keyPackageLeaf(keyPackage: KeyPackage): IncomingLeaf {
  const leaf = keyPackage.leafNode;
  const token = readFanoutAuthToken(keyPackage.extensions)?.token;
  return { clientId: clientIdOf(leaf.credential), credential: leaf.credential, signaturePublicKey: leaf.signaturePublicKey, addedByOther: true, ...(token !== undefined ? { token } : {}) };
}
