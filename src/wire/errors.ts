// DS error codes (draft-robert-mimi-delivery-service-05 leaves DSError as a
// TODO; these numbers are ours, see docs/protocol.md) and the gRPC/Connect
// status each maps to, as plain data so this layer needs no RPC dependency.

/** DSErrorCode (uint16). Unknown codes decode as-is for forward compatibility. */
export const DSErrorCode = {
  decode_error: 1,
  unsupported_version: 2,
  invalid_request: 3,
  invalid_message: 4,
  authentication_failed: 5,
  permission_denied: 6,
  unknown_group: 7,
  group_exists: 8,
  wrong_epoch: 9,
  missing_proposals: 10,
  unknown_client: 11,
  no_key_packages: 12,
  rate_limited: 13,
  too_large: 14,
  invalid_fanout_token: 15,
  blocked: 16,
  unavailable: 17,
  internal: 18,
  /** A per-client quota of stored things is used up (e.g. groups one client created). */
  quota_exceeded: 20,
} as const;
export type DSErrorCodeName = keyof typeof DSErrorCode;
export type DSErrorCodeValue = (typeof DSErrorCode)[DSErrorCodeName];

/** DSFanoutErrorCode (uint16). Unknown codes decode as-is. */
export const DSFanoutErrorCode = {
  unsupported_version: 1,
  bad_signature: 2,
  unknown_recipient: 3,
  invalid_token: 4,
  rate_limited: 5,
  blocked: 6,
  malformed: 7,
  internal: 8,
} as const;
export type DSFanoutErrorCodeName = keyof typeof DSFanoutErrorCode;
export type DSFanoutErrorCodeValue = (typeof DSFanoutErrorCode)[DSFanoutErrorCodeName];

/** gRPC/Connect status names (the Connect `Code` enum's names, without the dependency). */
export type RpcStatusName =
  | "InvalidArgument"
  | "Unauthenticated"
  | "PermissionDenied"
  | "NotFound"
  | "AlreadyExists"
  | "FailedPrecondition"
  | "ResourceExhausted"
  | "Unavailable"
  | "Internal"
  | "Unknown";

export const DS_ERROR_STATUS: Readonly<Record<DSErrorCodeName, RpcStatusName>> = Object.freeze({
  decode_error: "InvalidArgument",
  unsupported_version: "InvalidArgument",
  invalid_request: "InvalidArgument",
  invalid_message: "InvalidArgument",
  authentication_failed: "Unauthenticated",
  permission_denied: "PermissionDenied",
  unknown_group: "NotFound",
  group_exists: "AlreadyExists",
  wrong_epoch: "FailedPrecondition",
  missing_proposals: "FailedPrecondition",
  unknown_client: "NotFound",
  no_key_packages: "NotFound",
  rate_limited: "ResourceExhausted",
  too_large: "ResourceExhausted",
  invalid_fanout_token: "PermissionDenied",
  blocked: "PermissionDenied",
  unavailable: "Unavailable",
  internal: "Internal",
  quota_exceeded: "ResourceExhausted",
});

export const DS_FANOUT_ERROR_STATUS: Readonly<Record<DSFanoutErrorCodeName, RpcStatusName>> = Object.freeze({
  unsupported_version: "InvalidArgument",
  bad_signature: "Unauthenticated",
  unknown_recipient: "NotFound",
  invalid_token: "PermissionDenied",
  rate_limited: "ResourceExhausted",
  blocked: "PermissionDenied",
  malformed: "InvalidArgument",
  internal: "Internal",
});

const dsErrorNames = new Map<number, DSErrorCodeName>(
  (Object.entries(DSErrorCode) as [DSErrorCodeName, number][]).map(([k, v]) => [v, k]),
);
const fanoutErrorNames = new Map<number, DSFanoutErrorCodeName>(
  (Object.entries(DSFanoutErrorCode) as [DSFanoutErrorCodeName, number][]).map(([k, v]) => [v, k]),
);

/** Name of a DSErrorCode, or undefined for a code this version does not know. */
export function dsErrorCodeName(code: number): DSErrorCodeName | undefined {
  return dsErrorNames.get(code);
}

export function dsFanoutErrorCodeName(code: number): DSFanoutErrorCodeName | undefined {
  return fanoutErrorNames.get(code);
}

/** The RPC status a DS error code maps to; unknown codes map to "Unknown". */
export function dsErrorStatusName(code: number): RpcStatusName {
  const name = dsErrorNames.get(code);
  return name === undefined ? "Unknown" : DS_ERROR_STATUS[name];
}

export function dsFanoutErrorStatusName(code: number): RpcStatusName {
  const name = fanoutErrorNames.get(code);
  return name === undefined ? "Unknown" : DS_FANOUT_ERROR_STATUS[name];
}
