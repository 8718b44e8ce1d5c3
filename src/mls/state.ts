// Reading a group's public state, snapshots for the store, and replay of
// stored accepted messages on a snapshot.
import { decodeVarLenData } from "ts-mls/codec/variableLength.js";
import { decodeUint8 } from "ts-mls/codec/number.js";
import { concat, keyOf, run, varLen } from "./codec.js";
import { fail } from "./errors.js";
import { apply, merge, processMessage, seedFromGroupContext, type EngineOptions, type GroupState, type PendingProposal, type StagedCommit } from "./group.js";
import { domainOf } from "./identity.js";
import type { Credential, Reinit } from "ts-mls";
import { decodeReinit, reinitEncoder } from "ts-mls/proposal.js";
import { encode } from "ts-mls/codec/tlsEncoder.js";

export interface Member {
  readonly leafIndex: number;
  readonly clientId: string;
  readonly domain: string | undefined;
  readonly credential: Credential;
  readonly signaturePublicKey: Uint8Array;
  readonly encryptionKey: Uint8Array;
}

export const epochOf = (s: GroupState): bigint => s.groupContext.epoch;
export const groupIdOf = (s: GroupState): Uint8Array => s.groupContext.groupId;
/** Encoded GroupContext of the current epoch. */
export const groupContextBytes = (s: GroupState): Uint8Array => s.groupContextBytes;
/** The ratchet tree as in the ratchet_tree extension (`optional<Node> ratchet_tree<V>`). */
export const ratchetTreeBytes = (s: GroupState): Uint8Array => s.tree.encode();
export const treeHash = (s: GroupState): Uint8Array => s.tree.rootHash;
/** Encoded GroupInfo of the current epoch, if the engine has one. */
export const groupInfoBytes = (s: GroupState): Uint8Array | undefined => s.groupInfo;
/** The GroupInfo wrapped as an MLSMessage (version mls10, wire_format mls_group_info). */
export function groupInfoMessage(s: GroupState): Uint8Array | undefined {
  return s.groupInfo === undefined ? undefined : concat(Uint8Array.of(0, 1, 0, 4), s.groupInfo);
}

export function memberAt(s: GroupState, leafIndex: number): Member | undefined {
  const e = s.tree.leaf(leafIndex);
  if (e === undefined) return undefined;
  return {
    leafIndex,
    clientId: e.clientId,
    domain: domainOf(e.clientId),
    credential: e.leaf.credential,
    signaturePublicKey: e.leaf.signaturePublicKey,
    encryptionKey: e.leaf.hpkePublicKey,
  };
}

export function memberByClientId(s: GroupState, clientId: string): Member | undefined {
  const li = s.tree.findClient(clientId);
  return li === undefined ? undefined : memberAt(s, li);
}

export function memberBySignatureKey(s: GroupState, key: Uint8Array): Member | undefined {
  const li = s.tree.findSignatureKey(key);
  return li === undefined ? undefined : memberAt(s, li);
}

export function* members(s: GroupState): IterableIterator<Member> {
  for (let li = 0; li < s.tree.leafWidth; li++) {
    const m = memberAt(s, li);
    if (m !== undefined) yield m;
  }
}

export const memberCount = (s: GroupState): number => s.tree.memberCount;
export const pendingProposals = (s: GroupState): PendingProposal[] => [...s.proposals.values()];

/**
 * Pending proposals of the epoch that a staged commit does not reference. The
 * draft wants commits to include every stored proposal; this lets the DS
 * enforce that policy (external commits can only carry SelfRemoves).
 */
export function unreferencedProposals(staged: StagedCommit): PendingProposal[] {
  const used = new Set(staged.proposals.filter((p) => p.ref !== undefined).map((p) => keyOf(p.ref!)));
  return [...staged.base.proposals.values()].filter((p) => !used.has(keyOf(p.ref)));
}

/** Index of an external sender by its signature key (how the hub finds its own entry). */
export function externalSenderIndex(s: GroupState, signatureKey: Uint8Array): number | undefined {
  const k = keyOf(signatureKey);
  const i = s.externalSenders.findIndex((e) => keyOf(e.signaturePublicKey) === k);
  return i < 0 ? undefined : i;
}

// ---------------------------------------------------------------- snapshot

const SNAPSHOT_VERSION = 1;

/**
 * Snapshot: version(1) || GroupContext<V> || confirmation_tag<V> || ratchet_tree<V>
 * || optional GroupInfo<V> || pending proposal MLSMessages<V><V> || optional ReInit<V>.
 * The interim transcript hash follows from GroupContext and confirmation tag.
 */
export function encodeGroupState(s: GroupState): Uint8Array {
  const props = [...s.proposals.values()].map((p) => varLen(p.message));
  return concat(
    Uint8Array.of(SNAPSHOT_VERSION),
    varLen(s.groupContextBytes),
    varLen(s.confirmationTag),
    varLen(s.tree.encode()),
    s.groupInfo === undefined ? Uint8Array.of(0) : concat(Uint8Array.of(1), varLen(s.groupInfo)),
    varLen(concat(...props)),
    s.reinit === undefined ? Uint8Array.of(0) : concat(Uint8Array.of(1), varLen(encode(reinitEncoder)(s.reinit))),
  );
}

/**
 * Rebuild a state from a snapshot. By default leaf signatures are not re-verified
 * (the snapshot came from our own store); tree hash, parent hashes and indexes are rebuilt.
 */
export async function decodeGroupState(b: Uint8Array, options: EngineOptions & { verify?: "full" | "trusted" } = {}): Promise<GroupState> {
  if (b[0] !== SNAPSHOT_VERSION) fail("decode_error", "unknown snapshot version");
  let o = 1;
  const next = (what: string) => {
    const [v, l] = run(decodeVarLenData, b, o, what);
    o += l;
    return v;
  };
  const gc = next("GroupContext");
  const tag = next("confirmation_tag");
  const tree = next("ratchet_tree");
  const [hasGi] = run(decodeUint8, b, o, "GroupInfo flag");
  o += 1;
  const gi = hasGi === 1 ? next("GroupInfo") : undefined;
  const props = next("proposals");
  const [reinitFlag] = run(decodeUint8, b, o, "reinit flag");
  o += 1;
  let reinit: Reinit | undefined;
  if (reinitFlag === 1) {
    const rb = next("ReInit");
    const [r, rl] = run(decodeReinit, rb, 0, "ReInit");
    if (rl !== rb.length) fail("decode_error", "trailing bytes in ReInit");
    reinit = r;
  }
  if (o !== b.length) fail("decode_error", "trailing bytes in snapshot");
  let s = await seedFromGroupContext({ groupContext: gc, ratchetTree: tree, confirmationTag: tag }, { verify: "trusted", ...options });
  if (gi !== undefined) s = { ...s, groupInfo: gi };
  let p = 0;
  while (p < props.length) {
    const [msg, l] = run(decodeVarLenData, props, p, "proposal");
    p += l;
    const staged = await processMessage(s, msg);
    s = await merge(s, staged);
  }
  if (reinit !== undefined) s = { ...s, reinit };
  return s;
}

/** A stored accepted message: a proposal, or a commit with its PartialGroupInfo. */
export interface StoredMessage {
  readonly message: Uint8Array;
  readonly partialGroupInfo?: Uint8Array;
}

/**
 * Replay accepted messages, in order, on a snapshot (or any state). KeyPackage
 * lifetimes were checked when the messages were accepted; replaying them later
 * must not fail because time moved on, so lifetimes are not checked here.
 */
export async function replay(s: GroupState, messages: Iterable<StoredMessage>): Promise<GroupState> {
  const live = s.options;
  // Our own log: accepted (and verified) commits; neither lifetimes nor signatures are checked again.
  let t: GroupState = { ...s, options: { ...live, clockSkewSeconds: Number.MAX_SAFE_INTEGER, verifySignatures: false } };
  for (const m of messages) t = await apply(t, m.message, m.partialGroupInfo);
  return { ...t, options: live };
}
