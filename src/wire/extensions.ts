// MLS extension codepoints of the MIMI DS and typed helpers for their
// extension_data. Private-use codepoints (RFC 9420 §17.3: 0xF000-0xFFFF)
// where no registry entry exists; see docs/protocol.md.

import type { Extension, ExternalSender } from "ts-mls";
import {
  type Codec,
  type DecodeLimits,
  WireDecodeError,
  decodeWith,
  encodeWith,
  opaqueV,
  struct,
  uint16,
  vectorV,
} from "./codec.js";
import { EXTERNAL_SENDERS_EXTENSION_TYPE, decodeExternalSenders, extensionTypeNumber } from "./mls.js";
import {
  type DSProtocolVersion,
  type FanoutAuthToken,
  dsProtocolVersionCodec,
  fanoutAuthTokenCodec,
} from "./messages.js";

/** Our extension types. */
export const DSExtensionType = {
  /** KeyPackage extension; extension_data = FanoutAuthToken. */
  fanout_auth: 0xf0a1,
  /** GroupContext extension; extension_data = DSProtocolVersion (the version the group was created with). */
  ds_protocol_version: 0xf0a2,
  /** LeafNode extension; extension_data = DSProtocolVersion versions<V>. */
  ds_supported_versions: 0xf0a3,
  /**
   * KeyPackage extension with empty extension_data marking a last-resort package.
   * draft-ietf-mls-extensions only defines last_resort_key_package as an
   * application *component* (0x0004 inside app_data_dictionary), not an
   * extension type, so we use a private-use codepoint and also accept the
   * component form when reading.
   */
  last_resort: 0xf0a4,
  /** GroupContext extension; extension_data = ExternalJoinPolicy (uint8): who may join by external commit. */
  external_join_policy: 0xf0a5,
} as const;

/** app_data_dictionary extension type (draft-ietf-mls-extensions, "suggested" 0x0006). */
export const APP_DATA_DICTIONARY_EXTENSION_TYPE = 0x0006;
/** last_resort_key_package component id (draft-ietf-mls-extensions, MLS Component Types). */
export const LAST_RESORT_COMPONENT_ID = 0x0004;

// ---------------------------------------------------------------- lookup

/**
 * The single extension of `type` in a list. RFC 9420 forbids duplicates, so a
 * second one is malformed rather than silently ignored.
 */
export function findExtension(extensions: readonly Extension[], type: number): Extension | undefined {
  let found: Extension | undefined;
  for (const ext of extensions) {
    if (extensionTypeNumber(ext) !== type) continue;
    if (found !== undefined) {
      throw new WireDecodeError("malformed", `extensions[0x${type.toString(16)}]`, 0, "duplicate extension type");
    }
    found = ext;
  }
  return found;
}

function readExtension<T>(
  extensions: readonly Extension[],
  type: number,
  codec: Codec<T>,
  name: string,
  limits?: Partial<DecodeLimits>,
): T | undefined {
  const ext = findExtension(extensions, type);
  return ext === undefined ? undefined : decodeWith(codec, ext.extensionData, name, limits);
}

// ---------------------------------------------------------------- fanout_auth

export function makeFanoutAuthExtension(token: FanoutAuthToken): Extension {
  return { extensionType: DSExtensionType.fanout_auth, extensionData: encodeWith(fanoutAuthTokenCodec, token) };
}

/** The FanoutAuthToken of a KeyPackage's extensions, if present. */
export function readFanoutAuthToken(
  extensions: readonly Extension[],
  limits?: Partial<DecodeLimits>,
): FanoutAuthToken | undefined {
  return readExtension(extensions, DSExtensionType.fanout_auth, fanoutAuthTokenCodec, "fanout_auth", limits);
}

// ---------------------------------------------------------------- ds_protocol_version

export function makeDSProtocolVersionExtension(version: DSProtocolVersion): Extension {
  return {
    extensionType: DSExtensionType.ds_protocol_version,
    extensionData: encodeWith(dsProtocolVersionCodec, version),
  };
}

export function readDSProtocolVersion(extensions: readonly Extension[]): DSProtocolVersion | undefined {
  return readExtension(extensions, DSExtensionType.ds_protocol_version, dsProtocolVersionCodec, "ds_protocol_version");
}

// ---------------------------------------------------------------- ds_supported_versions

export const dsSupportedVersionsCodec: Codec<readonly DSProtocolVersion[]> = vectorV(dsProtocolVersionCodec);

export function makeDSSupportedVersionsExtension(versions: readonly DSProtocolVersion[]): Extension {
  return {
    extensionType: DSExtensionType.ds_supported_versions,
    extensionData: encodeWith(dsSupportedVersionsCodec, versions),
  };
}

export function readDSSupportedVersions(extensions: readonly Extension[]): readonly DSProtocolVersion[] | undefined {
  return readExtension(extensions, DSExtensionType.ds_supported_versions, dsSupportedVersionsCodec, "ds_supported_versions");
}

// ---------------------------------------------------------------- external_join_policy

/**
 * `enum { resync_only(0), open(1), (255) } ExternalJoinPolicy;` (uint8): a
 * group's own choice of who its hub lets in by external commit
 * (docs/security.md). Values this version does not know read as resync_only,
 * the narrower choice.
 */
export type ExternalJoinPolicy = "resync_only" | "open";
const EXTERNAL_JOIN_POLICY_VALUES: Readonly<Record<ExternalJoinPolicy, number>> = { resync_only: 0, open: 1 };

export function makeExternalJoinPolicyExtension(policy: ExternalJoinPolicy): Extension {
  return { extensionType: DSExtensionType.external_join_policy, extensionData: Uint8Array.of(EXTERNAL_JOIN_POLICY_VALUES[policy]) };
}

/** The policy a GroupContext's extensions name, or undefined when it names none. */
export function readExternalJoinPolicy(extensions: readonly Extension[]): ExternalJoinPolicy | undefined {
  const ext = findExtension(extensions, DSExtensionType.external_join_policy);
  if (ext === undefined) return undefined;
  if (ext.extensionData.length !== 1) {
    throw new WireDecodeError("malformed", "external_join_policy", 0, "external_join_policy extension_data must be one byte");
  }
  return ext.extensionData[0] === EXTERNAL_JOIN_POLICY_VALUES.open ? "open" : "resync_only";
}

// ---------------------------------------------------------------- last resort

/** `struct { ComponentID component_id; opaque data<V>; } ComponentData`. */
export interface ComponentData {
  readonly componentId: number;
  readonly data: Uint8Array;
}
export const componentDataCodec = struct<ComponentData>([
  ["component_id", "componentId", uint16],
  ["data", "data", opaqueV],
]);
/** `struct { ComponentData component_data<V>; } AppDataDictionary`. */
export const appDataDictionaryCodec: Codec<readonly ComponentData[]> = vectorV(componentDataCodec);

export function makeLastResortExtension(): Extension {
  return { extensionType: DSExtensionType.last_resort, extensionData: new Uint8Array(0) };
}

/**
 * Whether KeyPackage extensions mark a last-resort package: our 0xF0A4
 * extension (empty data), or a last_resort_key_package component in an
 * app_data_dictionary extension (draft-ietf-mls-extensions).
 */
export function isLastResort(extensions: readonly Extension[]): boolean {
  const ours = findExtension(extensions, DSExtensionType.last_resort);
  if (ours !== undefined) {
    if (ours.extensionData.length !== 0) {
      throw new WireDecodeError("malformed", "last_resort", 0, "last_resort extension_data must be empty");
    }
    return true;
  }
  const dict = readExtension(extensions, APP_DATA_DICTIONARY_EXTENSION_TYPE, appDataDictionaryCodec, "app_data_dictionary");
  return dict?.some((c) => c.componentId === LAST_RESORT_COMPONENT_ID) ?? false;
}

// ---------------------------------------------------------------- external_senders

/** External senders of a GroupContext's extensions, read in RFC 9420 form. */
export function readExternalSenders(
  extensions: readonly Extension[],
  limits?: Partial<DecodeLimits>,
): ExternalSender[] | undefined {
  const ext = findExtension(extensions, EXTERNAL_SENDERS_EXTENSION_TYPE);
  return ext === undefined ? undefined : decodeExternalSenders(ext.extensionData, limits);
}
