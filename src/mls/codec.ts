// Byte-level helpers and the decoders the engine needs beyond ts-mls:
// a PublicMessage decoder that keeps byte offsets (signatures, ProposalRefs and
// transcript hashes are computed over the received bytes, never re-encoded),
// SelfRemove (0x000a) proposals, RFC 9420's vector form of external_senders,
// and the draft's PartialGroupInfo.
import { decodeUint16, decodeUint64, decodeUint8, decodeUint32 } from "ts-mls/codec/number.js";
import { decodeVarLenData, decodeVarLenType, determineLength } from "ts-mls/codec/variableLength.js";
import { decodeSender } from "ts-mls/sender.js";
import { decodeProposal } from "ts-mls/proposal.js";
import { decodeExtension } from "ts-mls/extension.js";
import { decodeCredential } from "ts-mls/credential.js";
import type { Extension, Proposal, Sender, UpdatePath, Credential, LeafNode, ParentNode, Capabilities, CiphersuiteName, KeyPackage } from "ts-mls";
import { ciphersuites } from "ts-mls/crypto/ciphersuite.js";
import { defaultExtensionTypes } from "ts-mls/defaultExtensionType.js";
import { EngineError, fail } from "./errors.js";

export const PROPOSAL_TYPE_SELF_REMOVE = 0x000a;

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Buffer's latin1 decoder applied to a plain Uint8Array: no Buffer object per key.
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice: (this: Uint8Array, start: number, end: number) => string }).latin1Slice;

/** Map key for a byte string (latin1: one char per byte, cheap to build). */
export function keyOf(b: Uint8Array): string {
  return latin1Slice.call(b, 0, b.length);
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** RFC 9420 variable-length integer header for a vector of n bytes. */
export function varLenHeader(n: number): Uint8Array {
  if (n < 64) return Uint8Array.of(n);
  if (n < 16384) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  if (n < 0x40000000) return Uint8Array.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  return fail("decode_error", "vector too long");
}
export const varLen = (b: Uint8Array): Uint8Array => concat(varLenHeader(b.length), b);
export function u32(n: number): Uint8Array {
  return Uint8Array.of((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}
export function u16(n: number): Uint8Array {
  return Uint8Array.of((n >> 8) & 0xff, n & 0xff);
}

/** Run a ts-mls decoder, turning every failure into decode_error. */
export function run<T>(dec: (b: Uint8Array, o: number) => [T, number] | undefined, b: Uint8Array, o: number, what: string): [T, number] {
  let r: [T, number] | undefined;
  try {
    r = dec(b, o);
  } catch (e) {
    return fail("decode_error", `${what}: ${(e as Error).message}`);
  }
  if (r === undefined) return fail("decode_error", what);
  return r;
}

/** A Proposal; SelfRemove is carried as ts-mls's custom shape with empty data. */
export type AnyProposal = Proposal;

export function isSelfRemove(p: Proposal): boolean {
  return p.proposalType === PROPOSAL_TYPE_SELF_REMOVE;
}

/** Decode one Proposal, including SelfRemove (an empty struct, which ts-mls would misread). */
export function decodeAnyProposal(b: Uint8Array, o: number): [Proposal, number] {
  const [t] = run(decodeUint16, b, o, "proposal type");
  if (t === PROPOSAL_TYPE_SELF_REMOVE) return [{ proposalType: PROPOSAL_TYPE_SELF_REMOVE, proposalData: new Uint8Array() }, 2];
  if (t < 1 || t > 7) return fail("invalid_proposal", `unsupported proposal type ${t}`);
  if (t === 1) {
    const kp = decodeKeyPackageFast(b, o + 2);
    if (kp !== undefined) return [{ proposalType: "add", add: { keyPackage: kp[0] } }, 2 + kp[1]];
  }
  return run(decodeProposal, b, o, "proposal");
}

export type ProposalOrRefAny =
  | { proposalOrRefType: "proposal"; proposal: Proposal }
  | { proposalOrRefType: "reference"; reference: Uint8Array };

/**
 * The public view of an UpdatePath: the engine needs the new public keys and
 * how many HPKE ciphertexts each node carries, never the ciphertexts
 * themselves (a path in a big group carries thousands).
 */
export interface PathInfo {
  leafNode: LeafNode;
  nodes: { hpkePublicKey: Uint8Array; ciphertexts: number }[];
}

export function pathInfoOf(p: UpdatePath): PathInfo {
  return { leafNode: p.leafNode, nodes: p.nodes.map((n) => ({ hpkePublicKey: n.hpkePublicKey, ciphertexts: n.encryptedPathSecret.length })) };
}

function skipVec(b: Uint8Array, o: number): number {
  const { length, header } = vecLen(b, o);
  const end = o + header + length;
  if (end > b.length) fail("decode_error", "vector overruns");
  return end;
}

/** UpdatePath { LeafNode leaf_node; UpdatePathNode nodes<V>; } counting ciphertexts without decoding them. */
export function decodePathInfo(b: Uint8Array, o: number): [PathInfo, number] {
  const start = o;
  const [leafNode, ll] = decodeLeafNodeFast(b, o, true);
  o += ll;
  const { length, header } = vecLen(b, o);
  const end = o + header + length;
  if (end > b.length) fail("decode_error", "UpdatePath.nodes overruns");
  o += header;
  const nodes: PathInfo["nodes"] = [];
  while (o < end) {
    const [key, kl] = run(decodeVarLenData, b, o, "UpdatePathNode.encryption_key");
    o += kl;
    const v = vecLen(b, o);
    const cEnd = o + v.header + v.length;
    if (cEnd > end) fail("decode_error", "encrypted_path_secret overruns");
    let p = o + v.header;
    let n = 0;
    while (p < cEnd) {
      p = skipVec(b, p); // kem_output
      if (p > cEnd) fail("decode_error", "HPKECiphertext overruns");
      p = skipVec(b, p); // ciphertext
      if (p > cEnd) fail("decode_error", "HPKECiphertext overruns");
      n++;
    }
    o = cEnd;
    nodes.push({ hpkePublicKey: key, ciphertexts: n });
  }
  if (o !== end) fail("decode_error", "UpdatePath.nodes length mismatch");
  return [{ leafNode, nodes }, o - start];
}

export interface DecodedFramedContent {
  groupId: Uint8Array;
  epoch: bigint;
  sender: Sender;
  authenticatedData: Uint8Array;
  contentType: "application" | "proposal" | "commit";
  proposal?: Proposal;
  commit?: { proposals: ProposalOrRefAny[]; path: PathInfo | undefined };
}

/** A PublicMessage MLSMessage with the byte offsets the engine hashes and signs over. */
export interface DecodedPublicMessage {
  bytes: Uint8Array;
  content: DecodedFramedContent;
  signature: Uint8Array;
  confirmationTag?: Uint8Array;
  membershipTag?: Uint8Array;
  /** end of FramedContent (FramedContentTBS = bytes[0..fcEnd] || GroupContext) */
  fcEnd: number;
  /** end of the signature field (ConfirmedTranscriptHashInput = bytes[2..sigEnd]) */
  sigEnd: number;
  /** end of FramedContentAuthData (AuthenticatedContent = bytes[2..authEnd]) */
  authEnd: number;
}

function vecLen(b: Uint8Array, o: number): { length: number; header: number } {
  try {
    const { length, lengthFieldSize } = determineLength(b, o);
    return { length, header: lengthFieldSize };
  } catch (e) {
    return fail("decode_error", (e as Error).message);
  }
}

/**
 * Decode an MLSMessage(PublicMessage). With `withMembershipTag` false the bytes
 * are version || AuthenticatedContent (no membership_tag), as in test vectors.
 */
export function decodePublicMessage(bytes: Uint8Array, withMembershipTag = true): DecodedPublicMessage {
  if (bytes.length < 4) fail("decode_error", "short MLSMessage");
  const version = (bytes[0]! << 8) | bytes[1]!;
  if (version !== 1) fail("decode_error", `unsupported protocol version ${version}`);
  const wf = (bytes[2]! << 8) | bytes[3]!;
  if (wf !== 1) fail("unsupported_wireformat", `wire_format ${wf} is not mls_public_message`);
  let o = 4;
  const [groupId, l1] = run(decodeVarLenData, bytes, o, "group_id");
  o += l1;
  const [epoch, l2] = run(decodeUint64, bytes, o, "epoch");
  o += l2;
  const [sender, l3] = run(decodeSender, bytes, o, "sender");
  o += l3;
  const [authenticatedData, l4] = run(decodeVarLenData, bytes, o, "authenticated_data");
  o += l4;
  const [ct, l5] = run(decodeUint8, bytes, o, "content_type");
  o += l5;
  const content: DecodedFramedContent = { groupId, epoch, sender, authenticatedData, contentType: "application" };
  if (ct === 1) {
    fail("unsupported_content", "application data in a PublicMessage");
  } else if (ct === 2) {
    const [p, l] = decodeAnyProposal(bytes, o);
    o += l;
    content.contentType = "proposal";
    content.proposal = p;
  } else if (ct === 3) {
    const { length, header } = vecLen(bytes, o);
    const end = o + header + length;
    if (end > bytes.length) fail("decode_error", "proposals vector overruns");
    let p = o + header;
    const proposals: ProposalOrRefAny[] = [];
    while (p < end) {
      const [t] = run(decodeUint8, bytes, p, "ProposalOrRefType");
      p += 1;
      if (t === 1) {
        const [prop, l] = decodeAnyProposal(bytes, p);
        p += l;
        proposals.push({ proposalOrRefType: "proposal", proposal: prop });
      } else if (t === 2) {
        const [ref, l] = run(decodeVarLenData, bytes, p, "ProposalRef");
        p += l;
        proposals.push({ proposalOrRefType: "reference", reference: ref });
      } else fail("decode_error", `ProposalOrRefType ${t}`);
    }
    if (p !== end) fail("decode_error", "proposals vector length mismatch");
    o = end;
    const flag = bytes[o];
    o += 1;
    let path: PathInfo | undefined;
    if (flag === 1) {
      const [pi, lp] = decodePathInfo(bytes, o);
      o += lp;
      path = pi;
    } else if (flag !== 0) fail("decode_error", "bad optional<UpdatePath> flag");
    content.contentType = "commit";
    content.commit = { proposals, path };
  } else fail("decode_error", `content_type ${ct}`);
  const fcEnd = o;
  const [signature, ls] = run(decodeVarLenData, bytes, o, "signature");
  o += ls;
  const sigEnd = o;
  let confirmationTag: Uint8Array | undefined;
  if (content.contentType === "commit") {
    const [tag, lt] = run(decodeVarLenData, bytes, o, "confirmation_tag");
    o += lt;
    confirmationTag = tag;
  }
  const authEnd = o;
  let membershipTag: Uint8Array | undefined;
  if (sender.senderType === "member" && withMembershipTag) {
    const [mt, lm] = run(decodeVarLenData, bytes, o, "membership_tag");
    o += lm;
    membershipTag = mt;
  }
  if (o !== bytes.length) fail("decode_error", "trailing bytes after PublicMessage");
  return { bytes, content, signature, confirmationTag, membershipTag, fcEnd, sigEnd, authEnd };
}

/** RFC 9420 12.1.8.1: `ExternalSender external_senders<V>` (a vector in one extension). */
export interface ExternalSenderEntry {
  signaturePublicKey: Uint8Array;
  credential: Credential;
}

export function decodeExternalSendersExtension(data: Uint8Array): ExternalSenderEntry[] {
  const dec = (b: Uint8Array, o: number): [ExternalSenderEntry, number] | undefined => {
    const k = decodeVarLenData(b, o);
    if (k === undefined) return undefined;
    const c = decodeCredential(b, o + k[1]);
    if (c === undefined) return undefined;
    return [{ signaturePublicKey: k[0], credential: c[0] }, k[1] + c[1]];
  };
  const [list, len] = run(decodeVarLenType(dec), data, 0, "external_senders");
  if (len !== data.length) fail("decode_error", "trailing bytes in external_senders");
  return list;
}

/** draft-robert-mimi-delivery-service-05 Section 7: PartialGroupInfo. */
export interface PartialGroupInfo {
  groupInfoExtensions: Extension[];
  signature: Uint8Array;
}

export function decodePartialGroupInfo(b: Uint8Array): PartialGroupInfo {
  const [groupInfoExtensions, l1] = run(decodeVarLenType(decodeExtension), b, 0, "group_info_extensions");
  const [signature, l2] = run(decodeVarLenData, b, l1, "PartialGroupInfo.signature");
  if (l1 + l2 !== b.length) fail("decode_error", "trailing bytes in PartialGroupInfo");
  return { groupInfoExtensions, signature };
}

export { decodeUint32 };

// ---------------------------------------------------------------- fast LeafNode / ParentNode decoders
//
// Trees carry thousands of these, and ts-mls's combinator decoders allocate
// per field (a DataView per integer, an array spread per struct member).
// These give the same values and accept and reject the same inputs as
// ts-mls's decodeLeafNode / decodeParentNode (test/mls/codec.test.ts checks
// that), reading one field at a time.

const bad = (what: string): never => {
  throw new EngineError("decode_error", what);
};

/** Vector header at o (RFC 9420 2.1.2, as ts-mls reads it: no 8-byte form), bounded by end. */
function vecAt(b: Uint8Array, o: number, end: number): { start: number; end: number } {
  if (o >= end) bad("vector header beyond the data");
  const f = b[o]!;
  const prefix = f >> 6;
  let len: number;
  let hdr: number;
  if (prefix === 0) {
    len = f & 0x3f;
    hdr = 1;
  } else if (prefix === 1) {
    if (o + 2 > end) bad("incomplete 2-byte length");
    len = ((f & 0x3f) << 8) | b[o + 1]!;
    hdr = 2;
  } else if (prefix === 2) {
    if (o + 4 > end) bad("incomplete 4-byte length");
    len = ((f & 0x3f) << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!;
    hdr = 4;
  } else return bad("8-byte length not supported");
  const s = o + hdr;
  if (s + len > end) bad("vector overruns");
  return { start: s, end: s + len };
}

const u64Bytes = new Uint8Array(8);
const u64View = new DataView(u64Bytes.buffer);

/** Cursor over b[o..end); `vec` narrows `end` to the vector while reading its items. */
class Reader {
  /** Every vector header so far used the minimal length form (as ts-mls's encoders write it). */
  canonical = true;
  constructor(
    readonly b: Uint8Array,
    public o: number,
    public end: number,
  ) {}
  private vecHere(): { start: number; end: number } {
    const v = vecAt(this.b, this.o, this.end);
    const len = v.end - v.start;
    if (v.start - this.o !== (len < 64 ? 1 : len < 16384 ? 2 : 4)) this.canonical = false;
    return v;
  }
  u8(): number {
    if (this.o >= this.end) bad("uint8 beyond the data");
    return this.b[this.o++]!;
  }
  u16(): number {
    if (this.o + 2 > this.end) bad("uint16 beyond the data");
    const v = (this.b[this.o]! << 8) | this.b[this.o + 1]!;
    this.o += 2;
    return v;
  }
  u32(): number {
    if (this.o + 4 > this.end) bad("uint32 beyond the data");
    const b = this.b;
    const o = this.o;
    this.o += 4;
    return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  }
  u64(): bigint {
    if (this.o + 8 > this.end) bad("uint64 beyond the data");
    // one BigInt (not four) per value: through a shared 8-byte view
    for (let i = 0; i < 8; i++) u64Bytes[i] = this.b[this.o + i]!;
    this.o += 8;
    return u64View.getBigUint64(0);
  }
  /** opaque<V>, as a view into b. */
  bytes(): Uint8Array {
    const v = this.vecHere();
    this.o = v.end;
    return this.b.subarray(v.start, v.end);
  }
  /** T items<V>, each read by `item` within the vector's bounds. */
  vec<T>(item: (r: Reader) => T): T[] {
    const v = this.vecHere();
    const outer = this.end;
    this.o = v.start;
    this.end = v.end;
    const out: T[] = [];
    while (this.o < v.end) out.push(item(this));
    this.end = outer;
    // An array grown by push keeps spare capacity (17 slots after the first): the
    // thousands of small lists of a tree are kept at their exact size.
    return out.length === 0 ? out : out.slice();
  }
}

// ts-mls's enum mappings: open enums keep unknown values as decimal strings, closed ones reject them.
const suiteName = new Map<number, string>(Object.entries(ciphersuites).map(([k, v]) => [v, k]));
const extName = new Map<number, string>(Object.entries(defaultExtensionTypes).map(([k, v]) => [v, k]));
/** Unknown code points as text (GREASE values in every ts-mls leaf): one string per value, not per leaf. */
const numberNames = new Map<number, string>();
const nameOf = (n: number): string => {
  let s = numberNames.get(n);
  if (s === undefined) numberNames.set(n, (s = String(n)));
  return s;
};
const credName = (n: number): string => (n === 1 ? "basic" : n === 2 ? "x509" : nameOf(n));
const readU16 = (r: Reader) => r.u16();
const readU32 = (r: Reader) => r.u32();
const readBytes = (r: Reader) => r.bytes();
const readVersion = (r: Reader) => (r.u16() === 1 ? ("mls10" as const) : bad("unknown protocol version"));
const readSuite = (r: Reader) => {
  const n = r.u16();
  return (suiteName.get(n) ?? nameOf(n)) as CiphersuiteName;
};
const readCredType = (r: Reader) => credName(r.u16()) as Capabilities["credentials"][number];

function readCredential(r: Reader): Credential {
  const t = r.u16();
  if (t === 1) return { credentialType: "basic", identity: r.bytes() };
  if (t === 2) return { credentialType: "x509", certificates: r.vec(readBytes) };
  return bad(`credential type ${t}`);
}

function readCapabilities(r: Reader): Capabilities {
  const versions = r.vec(readVersion);
  const suites = r.vec(readSuite);
  const extensions = r.vec(readU16);
  const proposals = r.vec(readU16);
  const credentials = r.vec(readCredType);
  return { versions, ciphersuites: suites, extensions, proposals, credentials };
}

function readExtension(r: Reader): Extension {
  const n = r.u16();
  return { extensionType: (extName.get(n) ?? n) as Extension["extensionType"], extensionData: r.bytes() };
}

// Leaves of one group mostly carry the same lifetime and leaf extensions, byte
// for byte (clients of one implementation): a tree of 100,000 leaves would
// hold 100,000 equal copies.
// Decoded values are shared by their encoding instead (LeafNodes are never
// modified). Bounded: the table starts over when it has seen many distinct encodings.
const INTERN_MAX = 4096;
const interned = new Map<string, unknown>();
const latin1 = new TextDecoder("latin1");

function intern<T>(kind: string, r: Reader, start: number, value: T): T {
  const key = kind + latin1.decode(r.b.subarray(start, r.o));
  const seen = interned.get(key);
  if (seen !== undefined) return seen as T;
  if (interned.size >= INTERN_MAX) interned.clear();
  interned.set(key, value);
  return value;
}

function readLeafNode(r: Reader): LeafNode {
  const hpkePublicKey = r.bytes();
  const signaturePublicKey = r.bytes();
  const credential = readCredential(r);
  // Not shared: ts-mls puts random GREASE values in every leaf's capabilities, so they rarely repeat.
  const capabilities = readCapabilities(r);
  const source = r.u8();
  let leaf: LeafNode;
  if (source === 1) {
    const ltStart = r.o;
    const notBefore = r.u64();
    const notAfter = r.u64();
    const lifetime = intern("l", r, ltStart, { notBefore, notAfter });
    const extStart = r.o;
    const extensions = intern("e", r, extStart, r.vec(readExtension));
    leaf = { hpkePublicKey, signaturePublicKey, credential, capabilities, leafNodeSource: "key_package", lifetime, extensions, signature: r.bytes() };
  } else if (source === 2) {
    const extStart = r.o;
    const extensions = intern("e", r, extStart, r.vec(readExtension));
    leaf = { hpkePublicKey, signaturePublicKey, credential, capabilities, leafNodeSource: "update", extensions, signature: r.bytes() };
  } else if (source === 3) {
    const parentHash = r.bytes();
    const extStart = r.o;
    const extensions = intern("e", r, extStart, r.vec(readExtension));
    leaf = { hpkePublicKey, signaturePublicKey, credential, capabilities, leafNodeSource: "commit", parentHash, extensions, signature: r.bytes() };
  } else return bad(`leaf_node_source ${source}`);
  return leaf;
}

// Encodings of structs decoded from messages, when byte-identical to what
// ts-mls's encoders would write (minimal vector headers): signatures, refs and
// tree entries are then cut from them instead of re-encoding.
const leafBytes = new WeakMap<LeafNode, Uint8Array>();
const keyPackageBytes = new WeakMap<KeyPackage, { bytes: Uint8Array; tbsLength: number }>();

/** The encoded LeafNode this leaf was decoded from (= encodeLeafNode(leaf)), if known. */
export function encodedLeafNode(leaf: LeafNode): Uint8Array | undefined {
  return leafBytes.get(leaf);
}

/** The encoded KeyPackage (= encodeKeyPackage(kp)) and its TBS length, if known. */
export function encodedKeyPackage(kp: KeyPackage): { bytes: Uint8Array; tbsLength: number } | undefined {
  return keyPackageBytes.get(kp);
}

/**
 * LeafNode at b[o..]: the node and its encoded length. Byte fields are views
 * into b. `remember`: record the encoding for encodedLeafNode (message leaves;
 * not the thousands of a tree).
 */
export function decodeLeafNodeFast(b: Uint8Array, o: number, remember = false): [LeafNode, number] {
  const r = new Reader(b, o, b.length);
  let leaf: LeafNode;
  try {
    leaf = readLeafNode(r);
  } catch (e) {
    return fail("decode_error", `LeafNode: ${(e as Error).message}`);
  }
  if (remember && r.canonical) leafBytes.set(leaf, b.subarray(o, r.o));
  return [leaf, r.o - o];
}

/**
 * KeyPackage at b[o..] (ts-mls's shape: only key_package leaves), or
 * undefined if this decoder does not take it - the caller then uses ts-mls's
 * decoder, whose handling of odd input (e.g. falling back to a custom
 * proposal) stays the reference.
 */
export function decodeKeyPackageFast(b: Uint8Array, o: number): [KeyPackage, number] | undefined {
  const r = new Reader(b, o, b.length);
  try {
    if (r.u16() !== 1) return undefined;
    const cipherSuite = readSuite(r);
    const initKey = r.bytes();
    const leafStart = r.o;
    const leafNode = readLeafNode(r);
    if (leafNode.leafNodeSource !== "key_package") return undefined;
    const leafCanonical = r.canonical;
    const leafEnd = r.o;
    const extensions = r.vec(readExtension);
    const tbsLength = r.o - o;
    const signature = r.bytes();
    const kp: KeyPackage = { version: "mls10", cipherSuite, initKey, leafNode, extensions, signature };
    if (leafCanonical) leafBytes.set(leafNode, b.subarray(leafStart, leafEnd));
    if (r.canonical) keyPackageBytes.set(kp, { bytes: b.subarray(o, r.o), tbsLength });
    return [kp, r.o - o];
  } catch {
    return undefined;
  }
}

/** ParentNode at b[o..]: the node and its encoded length. */
export function decodeParentNodeFast(b: Uint8Array, o: number): [ParentNode, number] {
  const r = new Reader(b, o, b.length);
  try {
    const hpkePublicKey = r.bytes();
    const parentHash = r.bytes();
    const unmergedLeaves = r.vec(readU32);
    return [{ hpkePublicKey, parentHash, unmergedLeaves }, r.o - o];
  } catch (e) {
    return fail("decode_error", `ParentNode: ${(e as Error).message}`);
  }
}
