// The public group engine: seeds a group's public MLS state and processes
// PublicMessage proposals and commits exactly as a member would (RFC 9420
// 12.1-12.4), without any private key. Nothing here does I/O.
import type { Credential, Extension, GroupContext, KeyPackage, LeafNode, Proposal, Reinit, Sender } from "ts-mls";
import { decodeGroupContext, encodeGroupContext } from "ts-mls/groupContext.js";
import { decodeGroupInfo } from "ts-mls/groupInfo.js";
import { encodeKeyPackage, encodeKeyPackageTBS } from "ts-mls/keyPackage.js";
import { encodePskId } from "ts-mls/presharedkey.js";
import { decodeRequiredCapabilities, type RequiredCapabilities } from "ts-mls/requiredCapabilities.js";
import { protocolVersions } from "ts-mls/protocolVersion.js";
import { defaultExtensionTypes } from "ts-mls";
import { WrongEpochError, fail } from "./errors.js";
import { engineCrypto, type EngineCrypto, type VerifyBatch } from "./crypto.js";
import {
  bytesEqual,
  concat,
  decodeExternalSendersExtension,
  decodePartialGroupInfo,
  decodePublicMessage,
  encodedKeyPackage,
  isSelfRemove,
  keyOf,
  run,
  u32,
  varLen,
  varLenHeader,
  PROPOSAL_TYPE_SELF_REMOVE,
  type DecodedPublicMessage,
  type PathInfo,
  type ExternalSenderEntry,
} from "./codec.js";
import { PublicTree, leafEntry, parentEntry, type LeafEntry, type TreeEditor } from "./tree.js";
import { leafRange, leafToNode, nodeToLeaf } from "./treemath.js";

// ---------------------------------------------------------------- options

export interface EngineOptions {
  /** Current time in seconds since the epoch (default: Date.now()). */
  readonly now?: () => number;
  /** Tolerance when checking KeyPackage lifetimes, in seconds (default 300). */
  readonly clockSkewSeconds?: number;
  /** Reject a second leaf with the same client identifier (default true). */
  readonly uniqueClientIds?: boolean;
  /** Authentication Service hook: is this credential valid for this signature key? (default: accept). */
  readonly validateCredential?: (credential: Credential, signaturePublicKey: Uint8Array) => boolean;
}

interface ResolvedOptions {
  readonly now: () => number;
  readonly clockSkewSeconds: number;
  readonly uniqueClientIds: boolean;
  readonly validateCredential: (credential: Credential, signaturePublicKey: Uint8Array) => boolean;
  /**
   * False only while replaying the store's own log (state.ts replay): those
   * commits were verified when they were accepted, as a snapshot's leaves were
   * (decodeGroupState seeds "trusted"). Verifying their signatures again made a
   * restart of a 100,000-member group take a signature per added member.
   */
  readonly verifySignatures?: boolean;
}

function resolveOptions(o: EngineOptions = {}): ResolvedOptions {
  return {
    now: o.now ?? (() => Math.floor(Date.now() / 1000)),
    clockSkewSeconds: o.clockSkewSeconds ?? 300,
    uniqueClientIds: o.uniqueClientIds ?? true,
    validateCredential: o.validateCredential ?? (() => true),
  };
}

// ---------------------------------------------------------------- state

/** A proposal held for the current epoch until a commit references it. */
export interface PendingProposal {
  readonly ref: Uint8Array;
  readonly proposal: Proposal;
  readonly sender: Sender;
  /** Leaf index of a member sender. */
  readonly senderLeafIndex?: number;
  /** The MLSMessage as received (so the DS can forward it, e.g. SelfRemoves to external joiners). */
  readonly message: Uint8Array;
}

/** Immutable public state of one group in one epoch. */
export interface GroupState {
  readonly crypto: EngineCrypto;
  readonly options: ResolvedOptions;
  readonly groupContext: GroupContext;
  readonly groupContextBytes: Uint8Array;
  readonly interimTranscriptHash: Uint8Array;
  readonly confirmationTag: Uint8Array;
  readonly tree: PublicTree;
  /** Pending proposals of this epoch by ProposalRef (latin1 key). */
  readonly proposals: ReadonlyMap<string, PendingProposal>;
  /** Encoded GroupInfo of this epoch, when known (seeded from one, or assembled from a PartialGroupInfo). */
  readonly groupInfo?: Uint8Array;
  readonly externalSenders: readonly ExternalSenderEntry[];
  readonly requiredCapabilities?: RequiredCapabilities;
  /** Set once a ReInit was committed: the group takes no further commits. */
  readonly reinit?: Reinit;
}

const LABEL = (l: string) => new TextEncoder().encode(`MLS 1.0 ${l}`);
const L_FRAMED = LABEL("FramedContentTBS");
const L_LEAF = LABEL("LeafNodeTBS");
const L_KP = LABEL("KeyPackageTBS");
const L_GI = LABEL("GroupInfoTBS");
const L_PROPREF = new TextEncoder().encode("MLS 1.0 Proposal Reference");
const L_KPREF = new TextEncoder().encode("MLS 1.0 KeyPackage Reference");

/** SignContent = label<V> || content<V>, with content given in parts (one allocation for big commits). */
function signContent(label: Uint8Array, ...content: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const c of content) n += c.length;
  return concat(varLen(label), varLenHeader(n), ...content);
}

/** Verify one SignWithLabel, synchronously when node:crypto handles the algorithm (no threadpool round trip). */
function verifySigSync(c: EngineCrypto, pk: Uint8Array, label: Uint8Array, content: Uint8Array | Uint8Array[], sig: Uint8Array): boolean | Promise<boolean> {
  const m = content instanceof Uint8Array ? signContent(label, content) : signContent(label, ...content);
  return c.verifySync !== undefined ? c.verifySync(pk, m, sig) : c.verify(pk, m, sig);
}

/**
 * The signature checks of one message. A lone check is verified in place at
 * the end (no threadpool round trip); from the second on, all go to the
 * threadpool at once and run while the rest of the message is processed.
 * Failures come out as the sequential checks would give them: the first check
 * added wins, and an error of the processing itself counts only if every
 * check added before it passed (see `withSigChecks`).
 */
class SigChecks {
  /** A replay of our own log: nothing to verify (see ResolvedOptions.verifySignatures). */
  static readonly trusted = new (class extends SigChecks {
    override add(): void {}
    override leaf(): void {}
    override async settle(): Promise<void> {}
  })(undefined as unknown as EngineCrypto);
  private batch: VerifyBatch | undefined;
  private first: { pk: Uint8Array; m: Uint8Array; sig: Uint8Array } | undefined;
  private readonly errors: string[] = [];
  constructor(private readonly c: EngineCrypto) {}
  add(pk: Uint8Array, label: Uint8Array, content: Uint8Array[], sig: Uint8Array, error: string): void {
    const m = signContent(label, ...content);
    const tag = this.errors.length;
    this.errors.push(error);
    if (tag === 0) {
      this.first = { pk, m, sig };
      return;
    }
    if (this.batch === undefined) {
      this.batch = this.c.verifyBatch({ cacheKeys: true });
      this.batch.add(this.first!.pk, this.first!.m, this.first!.sig, 0);
      this.first = undefined;
    }
    this.batch.add(pk, m, sig, tag);
  }
  leaf(entry: LeafEntry, groupId: Uint8Array, leafIndex: number): void {
    this.add(entry.leaf.signaturePublicKey, L_LEAF, [leafTbs(entry, groupId, leafIndex)], entry.leaf.signature, `LeafNode signature of leaf ${leafIndex}`);
  }
  async settle(): Promise<void> {
    let failed: number | undefined;
    if (this.first !== undefined) {
      const { pk, m, sig } = this.first;
      this.first = undefined;
      if (!(this.c.verifySync !== undefined ? this.c.verifySync(pk, m, sig) : await this.c.verify(pk, m, sig))) failed = 0;
    } else if (this.batch !== undefined) failed = (await this.batch.failures())[0];
    if (failed !== undefined) fail("invalid_signature", this.errors[failed]!);
  }
}

/** Run a message's processing with its signature checks; see SigChecks for the error order. */
async function withSigChecks<T>(s: GroupState, body: (sigs: SigChecks) => T | Promise<T>): Promise<T> {
  const sigs = s.options.verifySignatures === false ? SigChecks.trusted : new SigChecks(s.crypto);
  let out: T;
  try {
    out = await body(sigs);
  } catch (e) {
    await sigs.settle();
    throw e;
  }
  await sigs.settle();
  return out;
}

const refHash = (c: EngineCrypto, label: Uint8Array, value: Uint8Array) => c.hashParts(varLen(label), varLenHeader(value.length), value);

export function keyPackageRef(c: EngineCrypto, kp: KeyPackage): Uint8Array {
  return refHash(c, L_KPREF, encodedKeyPackage(kp)?.bytes ?? encodeKeyPackage(kp));
}

/** LeafNodeTBS cut from the encoded leaf (all but the signature) plus the group context fields. */
function leafTbs(entry: LeafEntry, groupId: Uint8Array, leafIndex: number): Uint8Array {
  const sigLen = entry.leaf.signature.length;
  const body = entry.raw.subarray(0, entry.raw.length - varLenHeader(sigLen).length - sigLen);
  if (entry.leaf.leafNodeSource === "key_package") return body;
  return concat(body, varLen(groupId), u32(leafIndex));
}

let signScratch = new Uint8Array(4096);

/**
 * SignContent("LeafNodeTBS", LeafNodeTBS) built in a reused buffer (seeding
 * builds one per leaf): valid until the next call, which is enough for
 * VerifyBatch.add (node:crypto copies the data of an async job).
 */
function leafSignContent(entry: LeafEntry, groupId: Uint8Array, leafIndex: number): Uint8Array {
  const sigLen = entry.leaf.signature.length;
  const bodyLen = entry.raw.length - varLenHeader(sigLen).length - sigLen;
  const gh = varLenHeader(groupId.length);
  const ctx = entry.leaf.leafNodeSource === "key_package" ? 0 : gh.length + groupId.length + 4;
  const tbsLen = bodyLen + ctx;
  const lh = varLenHeader(L_LEAF.length);
  const th = varLenHeader(tbsLen);
  const n = lh.length + L_LEAF.length + th.length + tbsLen;
  if (signScratch.length < n) signScratch = new Uint8Array(Math.max(n, 2 * signScratch.length));
  const out = signScratch;
  out.set(lh, 0);
  let o = lh.length;
  out.set(L_LEAF, o);
  o += L_LEAF.length;
  out.set(th, o);
  o += th.length;
  out.set(entry.raw.subarray(0, bodyLen), o);
  o += bodyLen;
  if (ctx > 0) {
    out.set(gh, o);
    o += gh.length;
    out.set(groupId, o);
    o += groupId.length;
    out[o] = leafIndex >>> 24;
    out[o + 1] = leafIndex >>> 16;
    out[o + 2] = leafIndex >>> 8;
    out[o + 3] = leafIndex;
  }
  return out.subarray(0, n);
}

const isDefaultExt = (t: number | string) => typeof t === "string" || (t >= 1 && t <= 5);
const extNum = (t: number | string): number => (typeof t === "number" ? t : defaultExtensionTypes[t as keyof typeof defaultExtensionTypes]);

function parseGroupExtensions(exts: readonly Extension[]): { externalSenders: ExternalSenderEntry[]; required?: RequiredCapabilities } {
  let externalSenders: ExternalSenderEntry[] = [];
  let required: RequiredCapabilities | undefined;
  const seen = new Set<number>();
  for (const e of exts) {
    const t = extNum(e.extensionType);
    if (seen.has(t)) fail("invalid_proposal", `duplicate extension type ${t} in GroupContext`);
    seen.add(t);
    if (t === 5) externalSenders = decodeExternalSendersExtension(e.extensionData);
    if (t === 3) {
      const [rc, l] = run(decodeRequiredCapabilities, e.extensionData, 0, "required_capabilities");
      if (l !== e.extensionData.length) fail("decode_error", "trailing bytes in required_capabilities");
      required = rc;
    }
  }
  return required === undefined ? { externalSenders } : { externalSenders, required };
}

// ---------------------------------------------------------------- leaf validation

type Caps = TreeEditor["caps"];

function listsCredential(creds: readonly unknown[], t: string): boolean {
  for (const c of creds) if (String(c) === t) return true;
  return false;
}

/** RFC 9420 7.3 checks that do not need a signature: compatibility with the group. */
function checkLeafCompat(
  leaf: LeafNode,
  caps: Caps,
  memberCount: number,
  gcExtensions: readonly Extension[],
  required: RequiredCapabilities | undefined,
  counted: boolean,
): void {
  const ct = String(leaf.credential.credentialType);
  const creds = leaf.capabilities.credentials;
  const ownType = listsCredential(creds, ct);
  // every member supports this credential type (the leaf itself included when counted)
  const others = (caps.credSupport.get(ct) ?? 0) - (counted && ownType ? 1 : 0);
  const otherMembers = memberCount - (counted ? 1 : 0);
  if (others !== otherMembers) fail("unsupported_capability", `credential type ${ct} is not supported by every member`);
  if (!ownType) fail("unsupported_capability", `leaf does not list its own credential type ${ct}`);
  for (const [t, n] of caps.credUse) if (n > 0 && !listsCredential(creds, t)) fail("unsupported_capability", `leaf does not support credential type ${t} in use`);
  for (const e of leaf.extensions)
    if (!isDefaultExt(e.extensionType) && !leaf.capabilities.extensions.includes(extNum(e.extensionType)))
      fail("unsupported_capability", `leaf extension ${extNum(e.extensionType)} not in its capabilities`);
  for (const e of gcExtensions)
    if (!isDefaultExt(e.extensionType) && !leaf.capabilities.extensions.includes(extNum(e.extensionType)))
      fail("unsupported_capability", `leaf does not support group extension ${extNum(e.extensionType)}`);
  if (required !== undefined) {
    for (const t of required.extensionTypes)
      if (!isDefaultExt(t) && !leaf.capabilities.extensions.includes(t)) fail("unsupported_capability", `required extension ${t} unsupported`);
    for (const t of required.proposalTypes)
      if (!(t >= 1 && t <= 7) && !leaf.capabilities.proposals.includes(t)) fail("unsupported_capability", `required proposal ${t} unsupported`);
    for (const t of required.credentialTypes) if (!listsCredential(creds, String(t))) fail("unsupported_capability", `required credential ${String(t)} unsupported`);
  }
}

/** Every member supports the group's (non-default) extensions and required capabilities. */
function checkAllMembersSupport(caps: Caps, memberCount: number, gcExtensions: readonly Extension[], required: RequiredCapabilities | undefined): void {
  for (const e of gcExtensions) {
    if (isDefaultExt(e.extensionType)) continue;
    const t = extNum(e.extensionType);
    if ((caps.extSupport.get(t) ?? 0) !== memberCount) fail("unsupported_capability", `extension ${t} is not supported by every member`);
  }
  if (required !== undefined) {
    for (const t of required.extensionTypes)
      if (!isDefaultExt(t) && (caps.extSupport.get(t) ?? 0) !== memberCount) fail("unsupported_capability", `required extension ${t} not supported by every member`);
    for (const t of required.proposalTypes)
      if (!(t >= 1 && t <= 7) && (caps.propSupport.get(t) ?? 0) !== memberCount) fail("unsupported_capability", `required proposal ${t} not supported by every member`);
    for (const t of required.credentialTypes)
      if ((caps.credSupport.get(String(t)) ?? 0) !== memberCount) fail("unsupported_capability", `required credential ${String(t)} not supported by every member`);
  }
}

function checkCredential(o: ResolvedOptions, leaf: LeafNode): void {
  if (!o.validateCredential(leaf.credential, leaf.signaturePublicKey)) fail("invalid_leaf_node", "credential rejected by the authentication service");
}

/** KeyPackage checks (RFC 9420 10.1 + 7.3) that do not depend on the tree; the signatures go to `sigs`. */
function validateKeyPackage(s: GroupState, kp: KeyPackage, sigs: SigChecks): LeafEntry {
  if (kp.version !== s.groupContext.version) fail("invalid_key_package", "protocol version differs from the group's");
  if (kp.cipherSuite !== s.groupContext.cipherSuite) fail("invalid_key_package", "cipher suite differs from the group's");
  if (kp.leafNode.leafNodeSource !== "key_package") fail("invalid_key_package", "leaf_node_source is not key_package");
  if (bytesEqual(kp.initKey, kp.leafNode.hpkePublicKey)) fail("invalid_key_package", "init_key equals encryption_key");
  const entry = leafEntry(kp.leafNode);
  // leaf first: when both fail, the leaf's error is the one reported (as before)
  sigs.leaf(entry, s.groupContext.groupId, 0);
  const received = encodedKeyPackage(kp);
  const tbs = received !== undefined ? received.bytes.subarray(0, received.tbsLength) : encodeKeyPackageTBS(kp);
  sigs.add(kp.leafNode.signaturePublicKey, L_KP, [tbs], kp.signature, "KeyPackage signature");
  checkLifetime(s, kp);
  checkCredential(s.options, kp.leafNode);
  return entry;
}

function checkLifetime(s: GroupState, kp: KeyPackage): void {
  if (kp.leafNode.leafNodeSource !== "key_package") return;
  const now = BigInt(Math.floor(s.options.now()));
  const skew = BigInt(s.options.clockSkewSeconds);
  const lt = kp.leafNode.lifetime;
  if (now + skew < lt.notBefore || now - skew > lt.notAfter) fail("key_package_expired", `lifetime [${lt.notBefore}, ${lt.notAfter}] excludes now ${now}`);
}

// ---------------------------------------------------------------- seeding

export interface SeedInput {
  /** Encoded GroupContext (or the parsed object). */
  readonly groupContext: Uint8Array | GroupContext;
  /** Ratchet tree in the ratchet_tree extension form. */
  readonly ratchetTree: Uint8Array;
  /** The confirmation tag of the commit that created this epoch (interim transcript input). */
  readonly confirmationTag: Uint8Array;
}

export interface SeedOptions extends EngineOptions {
  /** "full" (default): verify everything. "trusted": skip leaf signatures (own snapshots). */
  readonly verify?: "full" | "trusted";
}

function interimHash(c: EngineCrypto, confirmed: Uint8Array, tag: Uint8Array): Uint8Array {
  return c.hash(concat(confirmed, varLen(tag)));
}

/** Seed from a GroupContext, ratchet tree and the epoch's confirmation tag (e.g. a member's public state). */
export async function seedFromGroupContext(input: SeedInput, options: SeedOptions = {}): Promise<GroupState> {
  const gc = input.groupContext instanceof Uint8Array ? decodeGC(input.groupContext) : input.groupContext;
  return seed(gc, input.ratchetTree, input.confirmationTag, undefined, options);
}

function decodeGC(b: Uint8Array): GroupContext {
  const [gc, l] = run(decodeGroupContext, b, 0, "GroupContext");
  if (l !== b.length) fail("decode_error", "trailing bytes after GroupContext");
  return gc;
}

/**
 * Seed from a signed GroupInfo (the struct, not wrapped in an MLSMessage) and
 * the ratchet tree (taken from the GroupInfo's ratchet_tree extension when omitted).
 */
export async function seedFromGroupInfo(groupInfo: Uint8Array, ratchetTree?: Uint8Array, options: SeedOptions = {}): Promise<GroupState> {
  const [gi, l] = run(decodeGroupInfo, groupInfo, 0, "GroupInfo");
  if (l !== groupInfo.length) fail("decode_error", "trailing bytes after GroupInfo");
  const treeBytes = ratchetTree ?? gi.extensions.find((e) => extNum(e.extensionType) === 2)?.extensionData;
  if (treeBytes === undefined) fail("invalid_group_info", "no ratchet tree given and no ratchet_tree extension");
  const state = await seed(gi.groupContext, treeBytes, gi.confirmationTag, groupInfo, options);
  const signer = state.tree.leaf(gi.signer);
  if (signer === undefined) fail("invalid_group_info", `GroupInfo signer ${gi.signer} is not a member`);
  const tbs = groupInfo.subarray(0, groupInfo.length - varLenHeader(gi.signature.length).length - gi.signature.length);
  if (!(await verifySigSync(state.crypto, signer.leaf.signaturePublicKey, L_GI, tbs, gi.signature))) fail("invalid_signature", "GroupInfo signature");
  return state;
}

/** Unwrap an MLSMessage(GroupInfo) to the GroupInfo struct bytes. */
export function groupInfoFromMlsMessage(msg: Uint8Array): Uint8Array {
  if (msg.length < 4 || msg[0] !== 0 || msg[1] !== 1 || msg[2] !== 0 || msg[3] !== 4) fail("decode_error", "not an MLSMessage(GroupInfo)");
  return msg.subarray(4);
}

async function seed(gc: GroupContext, treeBytes: Uint8Array, confirmationTag: Uint8Array, groupInfo: Uint8Array | undefined, options: SeedOptions): Promise<GroupState> {
  const o = resolveOptions(options);
  const crypto = await engineCrypto(gc.cipherSuite);
  // Leaf signatures go to the threadpool as each leaf is parsed, so they run
  // while this thread does the rest; their results are checked last.
  const sigs = options.verify === "trusted" ? undefined : crypto.verifyBatch();
  const onLeaf =
    sigs === undefined ? undefined : (li: number, e: LeafEntry) => sigs.add(e.leaf.signaturePublicKey, leafSignContent(e, gc.groupId, li), e.leaf.signature, li);
  const tree = PublicTree.decode(treeBytes, crypto, { uniqueClientIds: o.uniqueClientIds }, onLeaf);
  if (!bytesEqual(tree.rootHash, gc.treeHash)) fail("tree_hash_mismatch", "ratchet tree hash differs from GroupContext.tree_hash");
  const { externalSenders, required } = parseGroupExtensions(gc.extensions);
  const ed = tree.edit();
  ed.verifyUnmergedLeaves();
  ed.verifyAllParentHashes();
  // Leaves: compatibility and credentials (KeyPackage lifetimes are checked when a KeyPackage is added, not when joining).
  for (let li = 0; li < tree.leafWidth; li++) {
    const e = tree.leaf(li);
    if (e === undefined) continue;
    checkLeafCompat(e.leaf, ed.caps, ed.memberCount, gc.extensions, required, true);
    checkCredential(o, e.leaf);
  }
  if (sigs !== undefined) {
    const failed = await sigs.failures();
    if (failed.length > 0) fail("invalid_signature", `LeafNode signature of leaf ${failed[0]}`);
  }
  const gcBytes = encodeGroupContext(gc);
  return {
    crypto,
    options: o,
    groupContext: gc,
    groupContextBytes: gcBytes,
    interimTranscriptHash: interimHash(crypto, gc.confirmedTranscriptHash, confirmationTag),
    confirmationTag,
    tree,
    proposals: new Map(),
    ...(groupInfo !== undefined ? { groupInfo } : {}),
    externalSenders,
    ...(required !== undefined ? { requiredCapabilities: required } : {}),
  };
}

// ---------------------------------------------------------------- framing checks

function checkFraming(s: GroupState, m: DecodedPublicMessage): void {
  if (!bytesEqual(m.content.groupId, s.groupContext.groupId)) fail("wrong_group", "group_id differs");
  if (m.content.epoch !== s.groupContext.epoch) throw new WrongEpochError(s.groupContext.epoch, m.content.epoch);
}

function addFramedSignature(s: GroupState, m: DecodedPublicMessage, key: Uint8Array, sigs: SigChecks): void {
  const st = m.content.sender.senderType;
  const withContext = st === "member" || st === "new_member_commit";
  const tbs = withContext ? [m.bytes.subarray(0, m.fcEnd), s.groupContextBytes] : [m.bytes.subarray(0, m.fcEnd)];
  sigs.add(key, L_FRAMED, tbs, m.signature, "FramedContent signature");
}

function memberLeaf(s: GroupState, li: number): LeafEntry {
  const e = s.tree.leaf(li);
  if (e === undefined) fail("not_member", `leaf ${li} is blank or outside the tree`);
  return e;
}

// ---------------------------------------------------------------- proposals

export interface StagedProposal {
  readonly kind: "proposal";
  readonly base: GroupState;
  readonly pending: PendingProposal;
}

/** Per-proposal checks that need only the current state (RFC 9420 12.1). */
function validateProposal(s: GroupState, p: Proposal, sender: Sender, senderLeaf: number | undefined, sigs: SigChecks, inCommit = false): LeafEntry | undefined {
  const st = sender.senderType;
  switch (p.proposalType) {
    case "add": {
      if (st === "new_member_commit") fail("invalid_sender", "Add from new_member_commit");
      return validateKeyPackage(s, p.add.keyPackage, sigs);
    }
    case "update": {
      if (st !== "member" || senderLeaf === undefined) fail("invalid_sender", "Update must come from a member");
      const leaf = p.update.leafNode;
      if (leaf.leafNodeSource !== "update") fail("invalid_leaf_node", "Update leaf_node_source is not update");
      const entry = leafEntry(leaf);
      sigs.leaf(entry, s.groupContext.groupId, senderLeaf);
      checkCredential(s.options, leaf);
      const cur = memberLeaf(s, senderLeaf);
      if (bytesEqual(cur.leaf.hpkePublicKey, leaf.hpkePublicKey)) fail("invalid_leaf_node", "Update keeps the current encryption key");
      return entry;
    }
    case "remove": {
      if (st === "new_member_proposal") fail("invalid_sender", "Remove from a new member");
      if (s.tree.leaf(p.remove.removed) === undefined) fail("invalid_proposal", `Remove of blank leaf ${p.remove.removed}`);
      return undefined;
    }
    case "psk": {
      if (st !== "member" && st !== "external" && st !== "new_member_commit") fail("invalid_sender", "PreSharedKey sender");
      const id = p.psk.preSharedKeyId;
      if (id.pskNonce.length !== s.crypto.hashLen) fail("invalid_proposal", "psk_nonce length differs from the KDF output size");
      if (id.psktype === "resumption" && id.usage !== "application") fail("invalid_proposal", "resumption PSK usage must be application");
      return undefined;
    }
    case "reinit": {
      if (st !== "member" && st !== "external") fail("invalid_sender", "ReInit sender");
      if (protocolVersions[p.reinit.version] < protocolVersions[s.groupContext.version]) fail("invalid_proposal", "ReInit to an older protocol version");
      return undefined;
    }
    case "external_init":
      if (st !== "new_member_commit") fail("invalid_sender", "ExternalInit outside an external commit");
      return undefined;
    case "group_context_extensions": {
      if (st !== "member" && st !== "external") fail("invalid_sender", "GroupContextExtensions sender");
      const { required } = parseGroupExtensions(p.groupContextExtensions.extensions);
      // in a commit, support is checked on the final tree (members it removes need not support them)
      if (!inCommit) checkAllMembersSupport(s.tree.caps as Caps, s.tree.memberCount, p.groupContextExtensions.extensions, required);
      return undefined;
    }
    default:
      if (isSelfRemove(p)) {
        if (st !== "member") fail("invalid_sender", "SelfRemove must come from a member");
        return undefined;
      }
      return fail("invalid_proposal", `unsupported proposal type ${String(p.proposalType)}`);
  }
}

async function processProposal(s: GroupState, m: DecodedPublicMessage): Promise<StagedProposal> {
  const p = m.content.proposal!;
  const sender = m.content.sender;
  let key: Uint8Array;
  let senderLeaf: number | undefined;
  switch (sender.senderType) {
    case "member":
      senderLeaf = sender.leafIndex;
      key = memberLeaf(s, sender.leafIndex).leaf.signaturePublicKey;
      break;
    case "external": {
      const es = s.externalSenders[sender.senderIndex];
      if (es === undefined) fail("not_member", `no external sender ${sender.senderIndex}`);
      if (p.proposalType === "update" || p.proposalType === "external_init" || isSelfRemove(p))
        fail("invalid_sender", `external senders cannot send ${String(p.proposalType)}`);
      key = es.signaturePublicKey;
      break;
    }
    case "new_member_proposal":
      if (p.proposalType !== "add") fail("invalid_sender", "new_member_proposal must carry an Add");
      key = p.add.keyPackage.leafNode.signaturePublicKey;
      break;
    default:
      return fail("invalid_sender", "new_member_commit cannot send a proposal");
  }
  return withSigChecks(s, (sigs): StagedProposal => {
    addFramedSignature(s, m, key, sigs);
    validateProposal(s, p, sender, senderLeaf, sigs);
    validatedAgainstTree(s, p, senderLeaf);
    if (isSelfRemove(p)) {
      for (const q of s.proposals.values())
        if (isSelfRemove(q.proposal) && q.senderLeafIndex === senderLeaf) fail("invalid_proposal", "a second SelfRemove from the same member in this epoch");
    }
    const ref = refHash(s.crypto, L_PROPREF, m.bytes.subarray(2, m.authEnd));
    return {
      kind: "proposal",
      base: s,
      pending: { ref, proposal: p, sender, ...(senderLeaf !== undefined ? { senderLeafIndex: senderLeaf } : {}), message: m.bytes.slice() },
    };
  });
}

/** Tree-dependent checks of a standalone Add/Update against the current members. */
function validatedAgainstTree(s: GroupState, p: Proposal, senderLeaf: number | undefined): void {
  if (p.proposalType !== "add" && p.proposalType !== "update") return;
  const ed = s.tree.edit();
  if (p.proposalType === "add") {
    const e = leafEntry(p.add.keyPackage.leafNode);
    ed.addLeaf(e);
    checkLeafCompat(e.leaf, ed.caps, ed.memberCount, s.groupContext.extensions, s.requiredCapabilities, true);
  } else {
    const e = leafEntry(p.update.leafNode);
    ed.updateLeaf(senderLeaf!, e);
    checkLeafCompat(e.leaf, ed.caps, ed.memberCount, s.groupContext.extensions, s.requiredCapabilities, true);
  }
}

// ---------------------------------------------------------------- commits

export interface AddedMember {
  readonly leafIndex: number;
  readonly keyPackageRef: Uint8Array;
  readonly keyPackage: KeyPackage;
  readonly clientId: string;
}
export interface RemovedMember {
  readonly leafIndex: number;
  readonly clientId: string;
}
export interface UpdatedMember {
  readonly leafIndex: number;
  /** Client identifier before the commit; differs from clientId when the credential changed. */
  readonly previousClientId: string;
  readonly clientId: string;
}

export interface StagedCommit {
  readonly kind: "commit";
  readonly base: GroupState;
  /** Leaf index of the committer in the new epoch (the joiner's new leaf for external commits). */
  readonly committer: number;
  readonly senderType: "member" | "new_member_commit";
  readonly external: boolean;
  readonly added: readonly AddedMember[];
  readonly removed: readonly RemovedMember[];
  /** Leaves whose LeafNode changed (Update proposals and a member committer's path). */
  readonly updated: readonly UpdatedMember[];
  /** The new member of an external commit. */
  readonly externalJoiner?: { readonly leafIndex: number; readonly clientId: string };
  /** Every proposal the commit applies, in order, with where it came from. */
  readonly proposals: readonly { proposal: Proposal; sender: Sender; ref?: Uint8Array }[];
  readonly hasPath: boolean;
  readonly groupContext: GroupContext;
  readonly groupContextBytes: Uint8Array;
  readonly confirmationTag: Uint8Array;
  readonly interimTranscriptHash: Uint8Array;
  readonly tree: PublicTree;
  readonly externalSenders: readonly ExternalSenderEntry[];
  readonly requiredCapabilities?: RequiredCapabilities;
  readonly reinit?: Reinit;
  readonly message: Uint8Array;
}

interface Resolved {
  proposal: Proposal;
  sender: Sender;
  senderLeaf: number | undefined;
  ref?: Uint8Array;
}

const PATH_REQUIRED = new Set<unknown>(["update", "remove", "external_init", "group_context_extensions", PROPOSAL_TYPE_SELF_REMOVE]);

async function processCommit(s: GroupState, m: DecodedPublicMessage): Promise<StagedCommit> {
  if (s.reinit !== undefined) fail("group_suspended", "a ReInit was committed; the group is closed");
  const c = m.content.commit!;
  const sender = m.content.sender;
  let external = false;
  let key: Uint8Array;
  if (sender.senderType === "member") key = memberLeaf(s, sender.leafIndex).leaf.signaturePublicKey;
  else if (sender.senderType === "new_member_commit") {
    external = true;
    if (c.path === undefined) fail("path_required", "external commit without UpdatePath");
    key = c.path.leafNode.signaturePublicKey;
  } else return fail("invalid_sender", `${sender.senderType} cannot commit`);
  return withSigChecks(s, (sigs) => stageCommit(s, m, key, external, sigs));
}

/** processCommit after the sender checks; every signature goes to `sigs`. */
function stageCommit(s: GroupState, m: DecodedPublicMessage, key: Uint8Array, external: boolean, sigs: SigChecks): StagedCommit {
  const c = m.content.commit!;
  const sender = m.content.sender;
  addFramedSignature(s, m, key, sigs);

  // Resolve proposals by reference and by value.
  const list: Resolved[] = [];
  const committerLeafOld = sender.senderType === "member" ? sender.leafIndex : undefined;
  for (const por of c.proposals) {
    if (por.proposalOrRefType === "reference") {
      const pp = s.proposals.get(keyOf(por.reference));
      if (pp === undefined) fail("unknown_proposal", "commit references a proposal this epoch does not hold");
      if (external && !isSelfRemove(pp.proposal)) fail("invalid_commit", "external commits may reference only SelfRemove proposals");
      list.push({ proposal: pp.proposal, sender: pp.sender, senderLeaf: pp.senderLeafIndex, ref: pp.ref });
    } else {
      const p = por.proposal;
      if (p.proposalType === "update") fail("invalid_commit", "Update by value (the committer's own update)");
      if (isSelfRemove(p)) fail("invalid_commit", "SelfRemove by value");
      list.push({ proposal: p, sender, senderLeaf: committerLeafOld });
    }
  }
  // Proposals by value: validated here (their signatures all run in parallel on the threadpool).
  for (const por of c.proposals) if (por.proposalOrRefType === "proposal") validateProposal(s, por.proposal, sender, committerLeafOld, sigs, true);

  // RFC 9420 12.2: combination rules.
  const of = (t: unknown) => list.filter((r) => r.proposal.proposalType === t);
  const extInits = of("external_init");
  const reinits = of("reinit");
  if (external) {
    if (extInits.length !== 1) fail("invalid_commit", `external commit needs exactly one ExternalInit, has ${extInits.length}`);
    for (const r of list) {
      const t = r.proposal.proposalType;
      if (t !== "external_init" && t !== "remove" && t !== "psk" && t !== PROPOSAL_TYPE_SELF_REMOVE)
        fail("invalid_commit", `external commit cannot contain ${String(t)}`);
    }
    if (of("remove").length > 1) fail("invalid_commit", "external commit with more than one Remove");
  } else if (extInits.length > 0) fail("invalid_commit", "ExternalInit in a member commit");
  if (reinits.length > 0 && list.length !== 1) fail("invalid_commit", "ReInit must be the only proposal");
  if (of("group_context_extensions").length > 1) fail("invalid_commit", "more than one GroupContextExtensions");
  const touched = new Set<number>();
  const touch = (li: number) => {
    if (touched.has(li)) fail("invalid_commit", `several Update/Remove proposals for leaf ${li}`);
    touched.add(li);
  };
  for (const r of list) {
    const t = r.proposal.proposalType;
    if (t === "update") {
      if (r.senderLeaf === committerLeafOld) fail("invalid_commit", "Update proposal from the committer");
      touch(r.senderLeaf!);
    } else if (isSelfRemove(r.proposal)) {
      if (r.senderLeaf === committerLeafOld) fail("invalid_commit", "SelfRemove of the committer");
      touch(r.senderLeaf!);
    }
  }
  for (const r of of("remove")) {
    const target = (r.proposal as { remove: { removed: number } }).remove.removed;
    if (!external && target === committerLeafOld) fail("invalid_commit", "Remove of the committer");
    touch(target);
  }
  const pskIds = new Set<string>();
  for (const r of of("psk")) {
    const k = keyOf(encodePskId((r.proposal as { psk: { preSharedKeyId: Parameters<typeof encodePskId>[0] } }).psk.preSharedKeyId));
    if (pskIds.has(k)) fail("invalid_commit", "two PreSharedKey proposals with the same PreSharedKeyID");
    pskIds.add(k);
  }
  const pathRequired = list.length === 0 || list.some((r) => PATH_REQUIRED.has(r.proposal.proposalType));
  if (pathRequired && c.path === undefined) fail("path_required", "this commit needs an UpdatePath (RFC 9420 12.4)");
  if (m.confirmationTag === undefined) fail("decode_error", "commit without confirmation_tag");

  // Apply: Update, SelfRemove, Remove, Add (RFC 9420 12.3; SelfRemove per draft-ietf-mls-extensions).
  const ed = s.tree.edit();
  const added: AddedMember[] = [];
  const removed: RemovedMember[] = [];
  const updated: UpdatedMember[] = [];
  let externalJoiner: { leafIndex: number; clientId: string } | undefined;
  const changedLeaves: LeafEntry[] = [];
  let reinit: Reinit | undefined;
  let extensions = s.groupContext.extensions;
  let extParsed = { externalSenders: s.externalSenders as ExternalSenderEntry[], required: s.requiredCapabilities };

  if (reinits.length === 1) {
    reinit = (reinits[0]!.proposal as { reinit: Reinit }).reinit;
  } else {
    for (const r of of("update")) {
      const li = r.senderLeaf!;
      if (ed.leaf(li) === undefined) fail("invalid_proposal", `Update from blank leaf ${li}`);
      const e = leafEntry((r.proposal as { update: { leafNode: LeafNode } }).update.leafNode);
      updated.push({ leafIndex: li, previousClientId: ed.leaf(li)!.clientId, clientId: e.clientId });
      ed.updateLeaf(li, e);
      changedLeaves.push(e);
    }
    const removeLeaf = (li: number) => {
      const e = ed.leaf(li);
      if (e === undefined) fail("invalid_proposal", `Remove of blank leaf ${li}`);
      removed.push({ leafIndex: li, clientId: e.clientId });
      ed.removeLeaf(li);
    };
    for (const r of list) if (isSelfRemove(r.proposal)) removeLeaf(r.senderLeaf!);
    for (const r of of("remove")) removeLeaf((r.proposal as { remove: { removed: number } }).remove.removed);
    if (removed.length > 0) ed.truncate();
    const gce = of("group_context_extensions")[0];
    if (gce !== undefined) {
      extensions = (gce.proposal as { groupContextExtensions: { extensions: Extension[] } }).groupContextExtensions.extensions;
      const p = parseGroupExtensions(extensions);
      extParsed = { externalSenders: p.externalSenders, required: p.required };
    }
    for (const r of of("add")) {
      const kp = (r.proposal as { add: { keyPackage: KeyPackage } }).add.keyPackage;
      // signatures were verified when the proposal arrived (or above, by value);
      // the lifetime is checked again at commit time
      checkLifetime(s, kp);
      const e = leafEntry(kp.leafNode);
      const li = ed.addLeaf(e);
      added.push({ leafIndex: li, keyPackageRef: keyPackageRef(s.crypto, kp), keyPackage: kp, clientId: e.clientId });
      changedLeaves.push(e);
    }
  }

  // UpdatePath (RFC 9420 12.4.2).
  let committer = committerLeafOld ?? -1;
  if (c.path !== undefined) {
    const path = c.path;
    if (path.leafNode.leafNodeSource !== "commit") fail("invalid_leaf_node", "path leaf_node_source is not commit");
    const entry = leafEntry(path.leafNode);
    if (external) {
      committer = ed.nextFreeLeaf();
      // a resync Remove must remove the joiner's own old leaf
      for (const r of removed) if (r.clientId !== entry.clientId) fail("invalid_commit", "external commit removes a different client");
      ed.addLeaf(entry);
      externalJoiner = { leafIndex: committer, clientId: entry.clientId };
    } else {
      const cur = ed.leaf(committer)!;
      if (bytesEqual(cur.leaf.hpkePublicKey, path.leafNode.hpkePublicKey)) fail("invalid_leaf_node", "path leaf keeps the current encryption key");
      updated.push({ leafIndex: committer, previousClientId: cur.clientId, clientId: entry.clientId });
      ed.setNode(leafToNode(committer), entry);
    }
    sigs.leaf(entry, s.groupContext.groupId, committer);
    checkCredential(s.options, entry.leaf);
    changedLeaves.push(entry);
    mergeUpdatePath(ed, committer, path, new Set(added.map((a) => leafToNode(a.leafIndex))));
  }

  // Final-tree compatibility of every new or changed leaf, and of the group's extensions.
  for (const e of changedLeaves) checkLeafCompat(e.leaf, ed.caps, ed.memberCount, extensions, extParsed.required, true);
  if (extensions !== s.groupContext.extensions) checkAllMembersSupport(ed.caps, ed.memberCount, extensions, extParsed.required);
  // Non-default proposal types must be supported by the members that process the commit.
  const custom = new Set(list.map((r) => r.proposal.proposalType).filter((t): t is number => typeof t === "number"));
  for (const t of custom) {
    const addedSupporting = added.filter((a) => a.keyPackage.leafNode.capabilities.proposals.includes(t)).length;
    if ((ed.caps.propSupport.get(t) ?? 0) - addedSupporting !== ed.memberCount - added.length)
      fail("unsupported_capability", `proposal type ${t} is not supported by every member`);
  }

  const tree = ed.freeze();
  const confirmed = s.crypto.hashParts(s.interimTranscriptHash, m.bytes.subarray(2, m.sigEnd));
  const gc: GroupContext = {
    ...s.groupContext,
    epoch: s.groupContext.epoch + 1n,
    treeHash: tree.rootHash,
    confirmedTranscriptHash: confirmed,
    extensions,
  };
  const gcBytes = encodeGroupContext(gc);
  return {
    kind: "commit",
    base: s,
    committer,
    senderType: external ? "new_member_commit" : "member",
    external,
    added,
    removed,
    updated,
    ...(externalJoiner !== undefined ? { externalJoiner } : {}),
    proposals: list.map((r) => ({ proposal: r.proposal, sender: r.sender, ...(r.ref !== undefined ? { ref: r.ref } : {}) })),
    hasPath: c.path !== undefined,
    groupContext: gc,
    groupContextBytes: gcBytes,
    confirmationTag: m.confirmationTag!,
    interimTranscriptHash: interimHash(s.crypto, confirmed, m.confirmationTag!),
    tree,
    externalSenders: extParsed.externalSenders,
    ...(extParsed.required !== undefined ? { requiredCapabilities: extParsed.required } : {}),
    ...(reinit !== undefined ? { reinit } : {}),
    message: m.bytes,
  };
}


/**
 * RFC 9420 12.4.2 without secrets: check the UpdatePath's shape against the
 * filtered direct path (one ciphertext per resolution node of each copath
 * child, new joiners excluded), merge its public keys, and verify the
 * committer's parent_hash chain. The committer's new leaf is already in place.
 */
export function mergeUpdatePath(ed: TreeEditor, committer: number, path: PathInfo, joiners: ReadonlySet<number>): void {
  const fdp = ed.filteredDirectPath(committer);
  if (fdp.length !== path.nodes.length) fail("invalid_path", `UpdatePath has ${path.nodes.length} nodes, filtered direct path ${fdp.length}`);
  const joinerLeaves = [...joiners].map(nodeToLeaf);
  for (let i = 0; i < fdp.length; i++) {
    // each joiner below the copath child is in its resolution exactly once (as a
    // leaf, or unmerged at its highest non-blank ancestor there)
    const [from, to] = leafRange(fdp[i]!.copath);
    let inside = 0;
    for (const l of joinerLeaves) if (l >= from && l < to) inside++;
    const n = ed.resolutionSize(fdp[i]!.copath) - inside;
    if (path.nodes[i]!.ciphertexts !== n) fail("invalid_path", `node ${fdp[i]!.node}: ${path.nodes[i]!.ciphertexts} ciphertexts for a resolution of ${n}`);
  }
  ed.blankDirectPath(committer);
  for (let i = fdp.length - 1; i >= 0; i--) {
    const ph = i === fdp.length - 1 ? new Uint8Array() : ed.parentHash(fdp[i + 1]!.node, fdp[i + 1]!.copath);
    ed.setNode(fdp[i]!.node, parentEntry({ hpkePublicKey: path.nodes[i]!.hpkePublicKey, parentHash: ph, unmergedLeaves: [] }));
  }
  const leafPh = fdp.length === 0 ? new Uint8Array() : ed.parentHash(fdp[0]!.node, fdp[0]!.copath);
  if (path.leafNode.leafNodeSource !== "commit") fail("invalid_leaf_node", "path leaf_node_source is not commit");
  if (!bytesEqual(leafPh, path.leafNode.parentHash)) fail("invalid_parent_hash", "UpdatePath leaf parent_hash does not match the new path");
}

/** Confirmed and interim transcript hashes after a commit (RFC 9420 8.2). */
export function transcriptHashes(c: EngineCrypto, interimBefore: Uint8Array, m: DecodedPublicMessage): { confirmed: Uint8Array; interim: Uint8Array } {
  const confirmed = c.hashParts(interimBefore, m.bytes.subarray(2, m.sigEnd));
  return { confirmed, interim: interimHash(c, confirmed, m.confirmationTag ?? fail("decode_error", "no confirmation_tag")) };
}

/** Verify a PublicMessage's FramedContent signature against a GroupContext (test vectors, tooling). */
export async function verifyPublicMessageSignature(c: EngineCrypto, mlsMessage: Uint8Array, groupContext: Uint8Array, key: Uint8Array): Promise<boolean> {
  const m = decodePublicMessage(mlsMessage);
  const st = m.content.sender.senderType;
  const tbs = st === "member" || st === "new_member_commit" ? [m.bytes.subarray(0, m.fcEnd), groupContext] : [m.bytes.subarray(0, m.fcEnd)];
  return verifySigSync(c, key, L_FRAMED, tbs, m.signature);
}

// ---------------------------------------------------------------- entry points

export type Staged = StagedProposal | StagedCommit;

/**
 * Verify and stage one MLSMessage (a PublicMessage proposal or commit). The
 * state is not changed; merge the result with `merge`, or drop it.
 */
export async function processMessage(s: GroupState, mlsMessage: Uint8Array): Promise<Staged> {
  const m = decodePublicMessage(mlsMessage);
  if (s.reinit !== undefined) fail("group_suspended", "a ReInit was committed; the group takes no more handshake messages");
  checkFraming(s, m);
  if (m.content.contentType === "proposal") return processProposal(s, m);
  if (m.content.contentType === "commit") return processCommit(s, m);
  return fail("unsupported_content", "only proposals and commits are processed");
}

/** Assemble and verify the new epoch's GroupInfo from a staged commit and the committer's PartialGroupInfo. */
export async function assembleGroupInfo(staged: StagedCommit, partialGroupInfo: Uint8Array): Promise<Uint8Array> {
  const pgi = decodePartialGroupInfo(partialGroupInfo);
  const extLen = partialGroupInfo.length - varLenHeader(pgi.signature.length).length - pgi.signature.length;
  const extBytes = partialGroupInfo.subarray(0, extLen); // group_info_extensions<V>, as sent
  const tbs = concat(staged.groupContextBytes, extBytes, varLen(staged.confirmationTag), u32(staged.committer));
  const signer = staged.tree.leaf(staged.committer);
  if (signer === undefined) fail("invalid_group_info", "committer has no leaf in the new epoch");
  if (!(await verifySigSync(staged.base.crypto, signer.leaf.signaturePublicKey, L_GI, tbs, pgi.signature)))
    fail("invalid_signature", "PartialGroupInfo signature does not verify with the committer's key");
  return concat(tbs, varLen(pgi.signature));
}

/**
 * Merge a staged result into its base state, returning the new state (the base
 * stays valid). For a commit, a PartialGroupInfo may be given: its GroupInfo is
 * assembled, verified and kept as the new epoch's GroupInfo.
 */
export async function merge(s: GroupState, staged: Staged, partialGroupInfo?: Uint8Array): Promise<GroupState> {
  if (staged.base !== s) fail("invalid_commit", "staged result belongs to a different state");
  if (staged.kind === "proposal") {
    const proposals = new Map(s.proposals);
    proposals.set(keyOf(staged.pending.ref), staged.pending);
    return { ...s, proposals };
  }
  const groupInfo = partialGroupInfo !== undefined ? await assembleGroupInfo(staged, partialGroupInfo) : undefined;
  const next: GroupState = {
    crypto: s.crypto,
    options: s.options,
    groupContext: staged.groupContext,
    groupContextBytes: staged.groupContextBytes,
    interimTranscriptHash: staged.interimTranscriptHash,
    confirmationTag: staged.confirmationTag,
    tree: staged.tree,
    proposals: new Map(),
    ...(groupInfo !== undefined ? { groupInfo } : {}),
    externalSenders: staged.externalSenders,
    ...(staged.requiredCapabilities !== undefined ? { requiredCapabilities: staged.requiredCapabilities } : {}),
    ...(staged.reinit !== undefined ? { reinit: staged.reinit } : {}),
  };
  return next;
}

/** Process and merge in one step. */
export async function apply(s: GroupState, mlsMessage: Uint8Array, partialGroupInfo?: Uint8Array): Promise<GroupState> {
  return merge(s, await processMessage(s, mlsMessage), partialGroupInfo);
}

