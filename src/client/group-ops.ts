// The MLS work behind the SDK's group operations, in one place: the GroupInfo
// a creator signs, the PartialGroupInfo of a commit, commits themselves and
// external joins. Everything about how the SDK *writes* MLS structs (extension
// forms, what a Welcome carries) lives here, so that the RFC 9420 choices are
// made once for MimiGroup and the MimiMember facade alike.
//
// (These were MimiMember's private `commit` / `partialGroupInfo` and the
// GroupInfo parts of `createGroup` / `externalJoin`, moved unchanged.)
import {
  type CiphersuiteImpl,
  type ClientState,
  type GroupInfo,
  type KeyPackage,
  type MLSMessage,
  type PrivateKeyPackage,
  type Proposal,
  type RatchetTree,
  type Welcome,
  createCommit,
  createGroupInfoWithExternalPub,
  createGroupInfoWithExternalPubAndRatchetTree,
  joinGroupExternal,
} from "ts-mls";
import type { MLSGroupUpdate, PartialGroupInfo } from "../wire/index.js";

/** What the SDK's commits carry besides the commit (MimiClientOptions). */
export interface CommitOptions {
  /**
   * Put the ratchet tree into the Welcome's GroupInfo (RFC 9420 ratchet_tree
   * extension). Default true: many clients (CoreCrypto/OpenMLS among them)
   * cannot take the tree from elsewhere; false leaves joiners to welcome_info.
   */
  readonly welcomeRatchetTree?: boolean;
  /**
   * Put the ratchet tree into every PartialGroupInfo too, so that the hub's
   * GroupInfo carries it (default false: it costs the whole tree per commit).
   * Clients that join by external commit only from a GroupInfo with the tree
   * in it (CoreCrypto) need it from the last committer (docs/interop.md).
   */
  readonly groupInfoRatchetTree?: boolean;
}

/** A commit's DS request part, and the state to adopt once the hub accepted it. */
export interface PreparedCommit {
  readonly groupUpdate: MLSGroupUpdate;
  readonly welcome?: Welcome;
  readonly newState: ClientState;
}

/** The signed GroupInfo (with external_pub) a creator sends in create_group. */
export function creatorGroupInfo(state: ClientState, cs: CiphersuiteImpl): Promise<GroupInfo> {
  return createGroupInfoWithExternalPub(state, [], cs);
}

/**
 * The PartialGroupInfo of `newState`: extensions (with external_pub) and the
 * signature of its GroupInfo. external_pub is written in RFC 9420's form
 * (`opaque external_pub<V>`) by the patched ts-mls (patches/ts-mls+1.6.4.patch).
 */
export async function partialGroupInfo(newState: ClientState, cs: CiphersuiteImpl, o: CommitOptions = {}): Promise<PartialGroupInfo> {
  const gi = o.groupInfoRatchetTree === true ? await createGroupInfoWithExternalPubAndRatchetTree(newState, [], cs) : await createGroupInfoWithExternalPub(newState, [], cs);
  return { groupInfoExtensions: gi.extensions, signature: gi.signature };
}

/** A PublicMessage commit of `proposals` (plus every stored proposal by reference), with its PartialGroupInfo. */
export async function commit(state: ClientState, cs: CiphersuiteImpl, proposals: Proposal[], o: CommitOptions = {}): Promise<PreparedCommit> {
  const res = await createCommit({ state, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: proposals, ratchetTreeExtension: o.welcomeRatchetTree ?? true });
  const groupUpdate: MLSGroupUpdate = { commit: res.commit, partialGroupInfo: await partialGroupInfo(res.newState, cs, o) };
  return { groupUpdate, newState: res.newState, ...(res.welcome !== undefined ? { welcome: res.welcome } : {}) };
}

/** An external commit joining the group of `groupInfo` (resync: replacing the joiner's own old leaf). */
export async function externalJoinCommit(
  groupInfo: GroupInfo,
  ratchetTree: RatchetTree,
  keyPackage: { readonly publicPackage: KeyPackage; readonly privatePackage: PrivateKeyPackage },
  resync: boolean,
  cs: CiphersuiteImpl,
  o: CommitOptions = {},
): Promise<PreparedCommit> {
  const { publicMessage, newState } = await joinGroupExternal(
    groupInfo,
    keyPackage.publicPackage,
    keyPackage.privatePackage,
    resync,
    cs,
    ratchetTree,
  );
  const commitMessage: MLSMessage = { version: "mls10", wireformat: "mls_public_message", publicMessage };
  return { groupUpdate: { commit: commitMessage, partialGroupInfo: await partialGroupInfo(newState, cs, o) }, newState };
}
