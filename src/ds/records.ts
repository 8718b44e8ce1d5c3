// The DS's own records inside the store's opaque byte fields, as TLS structs
// (so every instance, and every later version, reads them the same way).
import { decodeWith, encodeWith, opaqueV, optional, struct, uint16, uint32, utf8V, vectorV, type Codec } from "../wire/index.js";

/** One accepted commit (or DS-side state change) in a group's epoch log. */
export interface EpochLogRecord {
  /** The MLSMessage (PublicMessage commit) as accepted. */
  readonly message: Uint8Array;
  /** The committer's PartialGroupInfo, TLS-serialized. */
  readonly partialGroupInfo?: Uint8Array;
}
const epochLogRecordCodec: Codec<EpochLogRecord> = struct<EpochLogRecord>([
  ["message", "message", opaqueV],
  ["partial_group_info", "partialGroupInfo", optional(opaqueV)],
]);
export const encodeEpochLogRecord = (r: EpochLogRecord): Uint8Array => encodeWith(epochLogRecordCodec, r);
export const decodeEpochLogRecord = (b: Uint8Array): EpochLogRecord => decodeWith(epochLogRecordCodec, b, "EpochLogRecord");

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
