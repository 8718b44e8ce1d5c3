// MLS structures (RFC 9420) as Codec<T>, decoded and encoded by ts-mls's own
// codecs. Three things are added on top of ts-mls:
//  - failures become WireDecodeError(malformed | truncated) with the field path;
//  - canonical bytes: every decoded value is re-encoded and compared with the
//    input, so lax spots of ts-mls (it accepts non-minimal varints and optional
//    presence bytes other than 1) cannot sneak a second encoding past the DS,
//    and re-encoding a decoded value always gives the original bytes back;
//  - RFC 9420 forms where ts-mls 1.6.4 deviates: the external_senders extension
//    (a vector, not one sender per extension) and the SelfRemove proposal
//    (an empty struct, which ts-mls would read as `opaque proposal_data<V>`).

import type {
  Commit,
  Credential,
  Extension,
  ExternalSender,
  GroupInfo,
  KeyPackage,
  MLSMessage,
  Proposal,
  RatchetTree,
  Welcome,
} from "ts-mls";
import type { BufferEncoder } from "ts-mls/codec/tlsEncoder.js";
import { encode as tsEncode } from "ts-mls/codec/tlsEncoder.js";
import type { Decoder as TsDecoder } from "ts-mls/codec/tlsDecoder.js";
import { decodeMlsMessage, mlsMessageEncoder } from "ts-mls/message.js";
import { decodeKeyPackage, keyPackageEncoder } from "ts-mls/keyPackage.js";
import { decodeRatchetTree, ratchetTreeEncoder, decodeNode, nodeEncoder, type Node } from "ts-mls/ratchetTree.js";
import { decodeGroupInfo, groupInfoEncoder } from "ts-mls/groupInfo.js";
import { decodeWelcome, welcomeEncoder } from "ts-mls/welcome.js";
import { decodeExtension, extensionEncoder, extensionTypeToNumber } from "ts-mls/extension.js";
import { decodeGroupSecrets, groupSecretsEncoder, type GroupSecrets } from "ts-mls/groupSecrets.js";
import {
  decodeAdd,
  addEncoder,
  decodeUpdate,
  updateEncoder,
  decodeRemove,
  removeEncoder,
  decodePSK,
  pskEncoder,
  decodeReinit,
  reinitEncoder,
  decodeExternalInit,
  externalInitEncoder,
  decodeGroupContextExtensions,
  groupContextExtensionsEncoder,
  decodeProposal,
  proposalEncoder,
  type Add,
  type Update,
  type Remove,
  type PSK,
  type Reinit,
  type ExternalInit,
  type GroupContextExtensions,
} from "ts-mls/proposal.js";
import { decodeCommit, commitEncoder } from "ts-mls/commit.js";
import { decodeCredential, credentialEncoder } from "ts-mls/credential.js";
import { encodeSender } from "ts-mls/sender.js";
import { encodeFramedContentTBS as tsEncodeFramedContentTBS, type FramedContentTBS } from "ts-mls/framedContent.js";
import {
  type Codec,
  type DecodeLimits,
  Decoder,
  Encoder,
  WireEncodeError,
  decodeWith,
  encodeWith,
  opaqueV,
  uint64,
  vectorV,
} from "./codec.js";

export type { GroupSecrets, Node, FramedContentTBS };

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ts-mls throws CodecError with these texts when it runs off its input.
const TS_MLS_SHORT = /beyond buffer|Incomplete|exceeds buffer|Offset is outside the bounds/i;

/**
 * Runs a ts-mls decoder at the decoder's offset, bounded by the current region,
 * and checks the value re-encodes to exactly the bytes it was read from.
 * `patch` lets a caller feed ts-mls an adjusted copy (see SelfRemove below).
 */
function runTsMls<T>(
  d: Decoder,
  name: string,
  decode: TsDecoder<T>,
  reencode: (v: T) => Uint8Array,
): T {
  const at = d.offset;
  let r: [T, number] | undefined;
  try {
    r = decode(d.view(), at);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const kind = TS_MLS_SHORT.test(msg) && d.bound === d.input.length ? "truncated" : "malformed";
    return d.fail(kind, `invalid ${name}: ${msg}`, at);
  }
  if (r === undefined) return d.fail("malformed", `invalid ${name}`, at);
  const [value, len] = r;
  if (len <= 0 || at + len > d.bound) return d.fail("malformed", `invalid ${name}`, at);
  let canonical: Uint8Array;
  try {
    canonical = reencode(value);
  } catch (err) {
    // What ts-mls read but cannot be written back (e.g. a SelfRemove with data,
    // read the ts-mls way after a non-minimal length hid the SelfRemove) is bad input.
    if (err instanceof WireEncodeError) return d.fail("malformed", `invalid ${name}: ${err.message}`, at);
    throw err;
  }
  if (!bytesEqual(canonical, d.input.subarray(at, at + len))) {
    return d.fail("malformed", `non-canonical ${name} encoding (non-minimal length or bad optional byte)`, at);
  }
  d.skip(len);
  return value;
}

/** Wraps a ts-mls (BufferEncoder, Decoder) pair as a strict Codec. */
export function tsMlsCodec<T>(name: string, encoder: BufferEncoder<T>, decoder: TsDecoder<T>): Codec<T> {
  const enc = tsEncode(encoder);
  const encodeChecked = (v: T): Uint8Array => {
    try {
      return enc(v);
    } catch (err) {
      throw new WireEncodeError(`cannot encode ${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  return {
    encode: (e, v) => e.bytes(encodeChecked(v)),
    decode: (d) => runTsMls(d, name, decoder, encodeChecked),
  };
}

// ---------------------------------------------------------------- SelfRemove

/** SelfRemove proposal type (draft-ietf-mls-extensions, IANA "MLS Proposal Types", 0x000a). */
export const SELF_REMOVE_PROPOSAL_TYPE = 0x000a;

/** A SelfRemove proposal in ts-mls's value model (its "custom proposal" shape with no data). */
export function selfRemoveProposal(): Proposal {
  return { proposalType: SELF_REMOVE_PROPOSAL_TYPE, proposalData: new Uint8Array(0) };
}

export function isSelfRemoveProposal(p: Proposal): boolean {
  return p.proposalType === SELF_REMOVE_PROPOSAL_TYPE;
}

// ts-mls encodes an unknown proposal type as `uint16 type; opaque data<V>`.
// RFC 9420 has no such generic form: SelfRemove is `struct {}`, i.e. the type
// alone. We splice the one-byte empty length out on encode and back in on
// decode, so ts-mls does everything else.

function checkSelfRemove(p: Proposal): void {
  if ("proposalData" in p && p.proposalData.length !== 0) {
    throw new WireEncodeError("SelfRemove proposal carries no data");
  }
}

function withoutByteAt(b: Uint8Array, pos: number): Uint8Array {
  if (b[pos] !== 0) throw new WireEncodeError("internal: expected the empty proposal_data length");
  const out = new Uint8Array(b.length - 1);
  out.set(b.subarray(0, pos));
  out.set(b.subarray(pos + 1), pos);
  return out;
}

function withZeroAt(b: Uint8Array, pos: number): Uint8Array {
  const out = new Uint8Array(b.length + 1);
  out.set(b.subarray(0, pos));
  out.set(b.subarray(pos), pos + 1);
  return out;
}

/** Offset just past `proposal_type` of a PublicMessage proposal starting at `at`, if it is a SelfRemove. */
function selfRemoveSpliceOffset(b: Uint8Array, at: number): number | undefined {
  try {
    const d = new Decoder(b, "");
    d.offset = at;
    d.uint16(); // version
    if (d.uint16() !== 1) return undefined; // mls_public_message
    opaqueV.decode(d); // group_id
    uint64.decode(d); // epoch
    const senderType = d.uint8();
    if (senderType === 1 || senderType === 2) d.uint32();
    opaqueV.decode(d); // authenticated_data
    if (d.uint8() !== 2) return undefined; // content_type proposal
    if (d.uint16() !== SELF_REMOVE_PROPOSAL_TYPE) return undefined;
    return d.offset;
  } catch {
    return undefined;
  }
}

const tsEncodeMlsMessage = tsEncode(mlsMessageEncoder);

/** Length of FramedContent's group_id, epoch, sender and authenticated_data. */
function framedContentHeadLength(content: {
  groupId: Uint8Array;
  epoch: bigint;
  sender: Parameters<typeof encodeSender>[0];
  authenticatedData: Uint8Array;
}): number {
  const head = new Encoder();
  opaqueV.encode(head, content.groupId);
  uint64.encode(head, content.epoch);
  head.bytes(encodeSender(content.sender));
  opaqueV.encode(head, content.authenticatedData);
  return head.length;
}

/**
 * RFC 9420 FramedContentTBS bytes (what a PublicMessage signature covers),
 * correct for SelfRemove proposals too; verify with
 * verifyWithLabel(key, "FramedContentTBS", bytes, signature).
 */
export function encodeFramedContentTBS(tbs: FramedContentTBS): Uint8Array {
  const raw = tsEncodeFramedContentTBS(tbs);
  const content = tbs.content;
  if (content.contentType !== "proposal" || !isSelfRemoveProposal(content.proposal)) return raw;
  checkSelfRemove(content.proposal);
  // version(2) wire_format(2) head content_type(1) proposal_type(2)
  return withoutByteAt(raw, 4 + framedContentHeadLength(content) + 3);
}

function encodeMlsMessageRfc(m: MLSMessage): Uint8Array {
  let raw: Uint8Array;
  try {
    raw = tsEncodeMlsMessage(m);
  } catch (err) {
    throw new WireEncodeError(`cannot encode MLSMessage: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (m.wireformat !== "mls_public_message") return raw;
  const content = m.publicMessage.content;
  if (content.contentType !== "proposal" || !isSelfRemoveProposal(content.proposal)) return raw;
  checkSelfRemove(content.proposal);
  // version(2) wire_format(2) group_id<V> epoch(8) sender authenticated_data<V> content_type(1) proposal_type(2)
  return withoutByteAt(raw, 4 + framedContentHeadLength(content) + 3);
}

/** MLSMessage (RFC 9420 §6), any wire format. */
export const mlsMessageCodec: Codec<MLSMessage> = {
  encode: (e, v) => e.bytes(encodeMlsMessageRfc(v)),
  decode: (d) => {
    const at = d.offset;
    const splice = selfRemoveSpliceOffset(d.view(), at);
    if (splice === undefined) return runTsMls(d, "MLSMessage", decodeMlsMessage, encodeMlsMessageRfc);
    // Feed ts-mls a copy with the empty length it expects, then account for it.
    const patched = withZeroAt(d.view(), splice);
    const patchedDecode: TsDecoder<MLSMessage> = (_b, off) => {
      const r = decodeMlsMessage(patched, off);
      return r === undefined ? undefined : [r[0], r[1] - 1];
    };
    return runTsMls(d, "MLSMessage", patchedDecode, encodeMlsMessageRfc);
  },
};

const tsEncodeProposal = tsEncode(proposalEncoder);

function encodeProposalRfc(p: Proposal): Uint8Array {
  if (isSelfRemoveProposal(p)) {
    checkSelfRemove(p);
    return Uint8Array.of(0x00, SELF_REMOVE_PROPOSAL_TYPE);
  }
  return tsEncodeProposal(p);
}

/** Proposal (RFC 9420 §12.1), including SelfRemove. */
export const proposalCodec: Codec<Proposal> = {
  encode: (e, v) => e.bytes(encodeProposalRfc(v)),
  decode: (d) => {
    const at = d.offset;
    if (d.remaining >= 2 && ((d.input[at]! << 8) | d.input[at + 1]!) === SELF_REMOVE_PROPOSAL_TYPE) {
      d.skip(2);
      return selfRemoveProposal();
    }
    return runTsMls(d, "Proposal", decodeProposal, encodeProposalRfc);
  },
};

// ---------------------------------------------------------------- plain wrappers

export const keyPackageCodec: Codec<KeyPackage> = tsMlsCodec("KeyPackage", keyPackageEncoder, decodeKeyPackage);
/** `optional<Node> ratchet_tree<V>` as in the ratchet_tree extension (decoded form is extended with blanks). */
export const ratchetTreeCodec: Codec<RatchetTree> = tsMlsCodec("RatchetTree", ratchetTreeEncoder, decodeRatchetTree);
export const nodeCodec: Codec<Node> = tsMlsCodec("Node", nodeEncoder, decodeNode);
export const groupInfoCodec: Codec<GroupInfo> = tsMlsCodec("GroupInfo", groupInfoEncoder, decodeGroupInfo);
export const welcomeCodec: Codec<Welcome> = tsMlsCodec("Welcome", welcomeEncoder, decodeWelcome);
export const extensionCodec: Codec<Extension> = tsMlsCodec("Extension", extensionEncoder, decodeExtension);
export const credentialCodec: Codec<Credential> = tsMlsCodec("Credential", credentialEncoder, decodeCredential);
export const groupSecretsCodec: Codec<GroupSecrets> = tsMlsCodec("GroupSecrets", groupSecretsEncoder, decodeGroupSecrets);
export const addCodec: Codec<Add> = tsMlsCodec("Add", addEncoder, decodeAdd);
export const updateCodec: Codec<Update> = tsMlsCodec("Update", updateEncoder, decodeUpdate);
export const removeCodec: Codec<Remove> = tsMlsCodec("Remove", removeEncoder, decodeRemove);
export const preSharedKeyCodec: Codec<PSK> = tsMlsCodec("PreSharedKey", pskEncoder, decodePSK);
export const reInitCodec: Codec<Reinit> = tsMlsCodec("ReInit", reinitEncoder, decodeReinit);
export const externalInitCodec: Codec<ExternalInit> = tsMlsCodec("ExternalInit", externalInitEncoder, decodeExternalInit);
export const groupContextExtensionsCodec: Codec<GroupContextExtensions> = tsMlsCodec(
  "GroupContextExtensions",
  groupContextExtensionsEncoder,
  decodeGroupContextExtensions,
);
export const commitCodec: Codec<Commit> = tsMlsCodec("Commit", commitEncoder, decodeCommit);

// ---------------------------------------------------------------- external_senders (RFC 9420 form)

/** `struct { SignaturePublicKey signature_key<V>; Credential credential; } ExternalSender`. */
export const externalSenderCodec: Codec<ExternalSender> = {
  encode: (e, v) => {
    opaqueV.encode(e, v.signaturePublicKey);
    credentialCodec.encode(e, v.credential);
  },
  decode: (d) => ({
    signaturePublicKey: d.field("signature_key", opaqueV),
    credential: d.field("credential", credentialCodec),
  }),
};

/** `ExternalSender external_senders<V>`: the extension_data of external_senders (RFC 9420 §12.1.8.1). */
export const externalSendersCodec: Codec<readonly ExternalSender[]> = vectorV(externalSenderCodec);

/** extension_data of an RFC 9420 external_senders extension (never ts-mls 1.6.4's one-per-extension form). */
export function encodeExternalSenders(senders: readonly ExternalSender[]): Uint8Array {
  return encodeWith(externalSendersCodec, senders);
}

export function decodeExternalSenders(extensionData: Uint8Array, limits?: Partial<DecodeLimits>): ExternalSender[] {
  return [...decodeWith(externalSendersCodec, extensionData, "external_senders", limits)];
}

/** EXTERNAL_SENDERS extension type (RFC 9420 §17.3). */
export const EXTERNAL_SENDERS_EXTENSION_TYPE = 0x0005;

/** Builds an RFC 9420 external_senders Extension (type number 5, ts-mls names it "external_senders"). */
export function makeExternalSendersExtension(senders: readonly ExternalSender[]): Extension {
  return { extensionType: "external_senders", extensionData: encodeExternalSenders(senders) };
}

/** Numeric extension type, whether ts-mls gave a name ("external_senders") or a number. */
export function extensionTypeNumber(ext: Extension): number {
  return extensionTypeToNumber(ext.extensionType);
}

// ---------------------------------------------------------------- top-level helpers

export function encodeMLSMessage(m: MLSMessage): Uint8Array {
  return encodeMlsMessageRfc(m);
}

export function decodeMLSMessage(bytes: Uint8Array, limits?: Partial<DecodeLimits>): MLSMessage {
  return decodeWith(mlsMessageCodec, bytes, "MLSMessage", limits);
}

/** Serialized `optional<Node> ratchet_tree<V>` (the ratchet_tree extension's extension_data). */
export function encodeRatchetTreeBytes(tree: RatchetTree): Uint8Array {
  return encodeWith(ratchetTreeCodec, tree);
}

export function decodeRatchetTreeBytes(bytes: Uint8Array, limits?: Partial<DecodeLimits>): RatchetTree {
  return decodeWith(ratchetTreeCodec, bytes, "ratchet_tree", limits);
}

/** Bare KeyPackage (not wrapped in an MLSMessage). */
export function encodeKeyPackageBytes(kp: KeyPackage): Uint8Array {
  return encodeWith(keyPackageCodec, kp);
}

export function decodeKeyPackageBytes(bytes: Uint8Array, limits?: Partial<DecodeLimits>): KeyPackage {
  return decodeWith(keyPackageCodec, bytes, "KeyPackage", limits);
}

/** The MLS group id an MLSMessage names in clear, if any (a Welcome's is encrypted). */
export function mlsMessageGroupId(m: MLSMessage): Uint8Array | undefined {
  switch (m.wireformat) {
    case "mls_public_message":
      return m.publicMessage.content.groupId;
    case "mls_private_message":
      return m.privateMessage.groupId;
    case "mls_group_info":
      return m.groupInfo.groupContext.groupId;
    default:
      return undefined;
  }
}
