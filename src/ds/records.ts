// The DS's own records inside the store's opaque byte fields, as TLS structs
// (so every instance, and every later version, reads them the same way).
import { decodeWith, encodeWith, opaqueV, optional, struct, uint8, uint16, uint32, utf8V, vectorV, WireDecodeError, type Codec } from "../wire/index.js";

/**
 * One accepted commit in a group's epoch log, with everything its replay
 * depends on (DESIGN 10: state = snapshot + log): the proposals that were
 * pending in the epoch it ended - the ones it references by value of their
 * ProposalRef, the hub's own among them - in the order they were accepted.
 */
export interface EpochLogRecord {
  /** The proposals pending when the commit was accepted (MLSMessages as received), in acceptance order. */
  readonly proposals: readonly Uint8Array[];
  /** The MLSMessage (PublicMessage commit) as accepted. */
  readonly message: Uint8Array;
  /** The committer's PartialGroupInfo, TLS-serialized. */
  readonly partialGroupInfo?: Uint8Array;
}

// Version 1 (no proposals) began with the commit's opaque<V> length. A commit
// MLSMessage is longer than 63 bytes, so that length is a 2- or 4-byte varint
// whose first byte is at least 0x40; a first byte below 0x40 is a version tag.
const LOG_RECORD_V2 = 2;
interface EpochLogRecordV1 {
  readonly message: Uint8Array;
  readonly partialGroupInfo?: Uint8Array;
}
const epochLogRecordV1Codec: Codec<EpochLogRecordV1> = struct<EpochLogRecordV1>([
  ["message", "message", opaqueV],
  ["partial_group_info", "partialGroupInfo", optional(opaqueV)],
]);
/** `struct { uint8 version = 2; opaque proposals<V><V>; opaque message<V>; optional<opaque> partial_group_info<V>; }`. */
const epochLogRecordV2Codec: Codec<EpochLogRecord & { version: number }> = struct<EpochLogRecord & { version: number }>([
  ["version", "version", uint8],
  ["proposals", "proposals", vectorV(opaqueV)],
  ["message", "message", opaqueV],
  ["partial_group_info", "partialGroupInfo", optional(opaqueV)],
]);
export const encodeEpochLogRecord = (r: EpochLogRecord): Uint8Array => encodeWith(epochLogRecordV2Codec, { version: LOG_RECORD_V2, ...r });
/**
 * Reads both versions. A version-1 record has no proposals: its commit
 * replays only if it references none (else GroupStateLostError at load).
 */
export function decodeEpochLogRecord(b: Uint8Array): EpochLogRecord {
  if (b.length > 0 && b[0]! >= 0x40) return { proposals: [], ...decodeWith(epochLogRecordV1Codec, b, "EpochLogRecord") };
  const { version, ...r } = decodeWith(epochLogRecordV2Codec, b, "EpochLogRecord");
  if (version !== LOG_RECORD_V2) throw new WireDecodeError("malformed", "EpochLogRecord.version", 0, `version ${version} is not known to this build`);
  return r;
}

/** A joiner of an epoch (draft Section 7): how to recognise it when it asks for its ratchet tree. */
export interface JoinerRecord {
  readonly keyPackageRef: Uint8Array;
  readonly leafIndex: number;
  readonly signaturePublicKey: Uint8Array;
}
/** What the DS keeps beside an epoch-history entry's ratchet tree. */
export interface EpochHistoryRecord {
  readonly groupInfo: Uint8Array;
  readonly joiners: readonly JoinerRecord[];
}
const joinerRecordCodec: Codec<JoinerRecord> = struct<JoinerRecord>([
  ["key_package_ref", "keyPackageRef", opaqueV],
  ["leaf_index", "leafIndex", uint32],
  ["signature_public_key", "signaturePublicKey", opaqueV],
]);
const epochHistoryRecordCodec: Codec<EpochHistoryRecord> = struct<EpochHistoryRecord>([
  ["group_info", "groupInfo", opaqueV],
  ["joiners", "joiners", vectorV(joinerRecordCodec)],
]);
export const encodeEpochHistoryRecord = (r: EpochHistoryRecord): Uint8Array => encodeWith(epochHistoryRecordCodec, r);
export const decodeEpochHistoryRecord = (b: Uint8Array): EpochHistoryRecord => decodeWith(epochHistoryRecordCodec, b, "EpochHistoryRecord");

/** Per-group metadata the engine does not track. */
export interface GroupMetadata {
  /** MIMI DS protocol version of the group (its ds_protocol_version extension). */
  readonly protocolVersion: number;
  /** Client identifier of the creator. */
  readonly creator: string;
}
const groupMetadataCodec: Codec<GroupMetadata> = struct<GroupMetadata>([
  ["protocol_version", "protocolVersion", uint16],
  ["creator", "creator", utf8V],
]);
export const encodeGroupMetadata = (m: GroupMetadata): Uint8Array => encodeWith(groupMetadataCodec, m);
export const decodeGroupMetadata = (b: Uint8Array): GroupMetadata => decodeWith(groupMetadataCodec, b, "GroupMetadata");
