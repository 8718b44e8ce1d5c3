// The structs of draft-robert-mimi-delivery-service-05, with the gaps of the
// draft filled as recorded in docs/protocol.md. Names follow the draft; TS
// values are immutable discriminated unions.

import type { Extension, KeyPackage, MLSMessage, RatchetTree } from "ts-mls";
import {
  type Codec,
  type DecodeLimits,
  decodeWith,
  empty,
  encodeWith,
  Encoder,
  enumCodec,
  opaque8,
  opaqueV,
  optional,
  struct,
  uint16,
  uint32,
  uint64,
  utf8V,
  variant,
  vectorV,
} from "./codec.js";
import { extensionCodec, keyPackageCodec, mlsMessageCodec, ratchetTreeCodec } from "./mls.js";

// ---------------------------------------------------------------- basics

/** `uint16 DSProtocolVersion`. The codec accepts any value; the DS checks it. */
export type DSProtocolVersion = number;
export const DS_PROTOCOL_VERSION: DSProtocolVersion = 1;
export const dsProtocolVersionCodec: Codec<DSProtocolVersion> = uint16;

/** `opaque ClientID<V>`: UTF-8 client identifier bytes. */
export type ClientID = Uint8Array;
export const clientIdCodec: Codec<ClientID> = opaqueV;

/** `uint16 CipherSuite` (RFC 9420). */
export type CipherSuite = number;

/** Signature labels for RFC 9420 SignWithLabel ("MLS 1.0 " is prefixed by SignWithLabel). */
export const SignatureLabel = {
  /** DSAuthData.client_signature over ClientSignatureTBS. */
  DSRequest: "DSRequest",
  /** DSAuthData.joiner_signature over JoinerSignatureTBS. */
  DSJoinerRequest: "DSJoinerRequest",
  /** DSAuthData.registered_client over RegisteredClientSignatureTBS. */
  DSRegisteredClientRequest: "DSRegisteredClientRequest",
  /** DSFanoutRequest.signature over DSFanoutRequestTBS. */
  DSFanoutRequest: "DSFanoutRequest",
  /**
   * The signature of a DSFanoutRequest sent by reference to a guest that asked
   * for it (FanoutService head_digest_signature), over FanoutHeadDigestTBS:
   * `struct { opaque head_digest<V>; MLSMessage mls_message; }`, head_digest
   * the SHA-256 of the request's bytes before mls_message.
   */
  DSFanoutRequestHeadDigest: "DSFanoutRequestHeadDigest",
  /** proto ClientAuth.signature over ClientAuthTBS. */
  ClientAuth: "ClientAuth",
  /** RegistrationCredential.signature (the provider's issuer key, Ed25519) over RegistrationCredentialTBS. */
  DSRegistration: "DSRegistration",
} as const;

/** `struct { opaque label<V> = "MLS 1.0 " + Label; opaque content<V>; } SignContent` (RFC 9420 §5.1.2). */
export function encodeSignContent(label: string, content: Uint8Array | readonly Uint8Array[]): Uint8Array {
  // Content given in parts (a DSFanoutRequest's recipient section, up to a few hundred KB,
  // and its message) is copied once, into the result, without joining the parts first.
  const parts = content instanceof Uint8Array ? [content] : content;
  const labelBytes = new TextEncoder().encode(`MLS 1.0 ${label}`);
  const contentLength = parts.reduce((n, p) => n + p.length, 0);
  const header = new Encoder(labelBytes.length + 8);
  header.varint(labelBytes.length);
  header.bytes(labelBytes);
  header.varint(contentLength);
  const head = header.finish();
  const out = new Uint8Array(head.length + contentLength);
  out.set(head);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------- FanoutAuthToken, MLSGroupUpdate

/** `struct { opaque token<V>; } FanoutAuthToken`. */
export interface FanoutAuthToken {
  readonly token: Uint8Array;
}
export const fanoutAuthTokenCodec: Codec<FanoutAuthToken> = struct<FanoutAuthToken>([["token", "token", opaqueV]]);

/** `struct { Extension group_info_extensions<V>; opaque signature<V>; } PartialGroupInfo`. */
export interface PartialGroupInfo {
  readonly groupInfoExtensions: readonly Extension[];
  readonly signature: Uint8Array;
}
export const partialGroupInfoCodec: Codec<PartialGroupInfo> = struct<PartialGroupInfo>([
  ["group_info_extensions", "groupInfoExtensions", vectorV(extensionCodec)],
  ["signature", "signature", opaqueV],
]);

/** `struct { MLSMessage commit; PartialGroupInfo partial_group_info; } MLSGroupUpdate`. */
export interface MLSGroupUpdate {
  readonly commit: MLSMessage;
  readonly partialGroupInfo: PartialGroupInfo;
}
export const mlsGroupUpdateCodec: Codec<MLSGroupUpdate> = struct<MLSGroupUpdate>([
  ["commit", "commit", mlsMessageCodec],
  ["partial_group_info", "partialGroupInfo", partialGroupInfoCodec],
]);

// ---------------------------------------------------------------- request bodies

export interface DeleteGroupRequest {
  readonly groupUpdate: MLSGroupUpdate;
}
export interface AddClientsRequest {
  readonly groupUpdate: MLSGroupUpdate;
  readonly welcomeMessages: readonly MLSMessage[];
}
export interface RemoveClientsRequest {
  readonly groupUpdate: MLSGroupUpdate;
}
export interface SelfRemoveClientRequest {
  readonly proposal: MLSMessage;
}
export interface UpdateClientRequest {
  readonly groupUpdate: MLSGroupUpdate;
  readonly token?: FanoutAuthToken;
}
export interface ExternalJoinRequest {
  readonly groupUpdate: MLSGroupUpdate;
}
export interface SendMessageRequest {
  readonly applicationMessage: MLSMessage;
}
export interface KeyPackagesRequest {
  readonly clientIdentifiers: readonly ClientID[];
  /** Acceptable cipher suites; empty means any. */
  readonly cipherSuites: readonly CipherSuite[];
}
export type RequestGroupIdRequest = Record<string, never>;
export interface CreateGroupRequest {
  /** MLSMessage of wire format mls_group_info, signed by the creator. */
  readonly groupInfo: MLSMessage;
  /** TLS-serialized `optional<Node> ratchet_tree<V>` (decode with decodeRatchetTreeBytes). */
  readonly ratchetTree: Uint8Array;
  readonly creatorToken: FanoutAuthToken;
}
export interface WelcomeInfoRequest {
  readonly groupId: Uint8Array;
  readonly epoch: bigint;
  readonly keyPackageRef: Uint8Array;
}
export interface ExternalCommitInfoRequest {
  readonly groupId: Uint8Array;
}
export interface ReInitializeGroupRequest {
  readonly commit: MLSGroupUpdate;
}

const groupUpdateField = ["group_update", "groupUpdate", mlsGroupUpdateCodec] as const;

export const deleteGroupRequestCodec = struct<DeleteGroupRequest>([groupUpdateField]);
export const addClientsRequestCodec = struct<AddClientsRequest>([
  groupUpdateField,
  ["welcome_messages", "welcomeMessages", vectorV(mlsMessageCodec)],
]);
export const removeClientsRequestCodec = struct<RemoveClientsRequest>([groupUpdateField]);
export const selfRemoveClientRequestCodec = struct<SelfRemoveClientRequest>([["proposal", "proposal", mlsMessageCodec]]);
export const updateClientRequestCodec = struct<UpdateClientRequest>([
  groupUpdateField,
  ["token", "token", optional(fanoutAuthTokenCodec)],
]);
export const externalJoinRequestCodec = struct<ExternalJoinRequest>([groupUpdateField]);
export const sendMessageRequestCodec = struct<SendMessageRequest>([
  ["application_message", "applicationMessage", mlsMessageCodec],
]);
export const keyPackagesRequestCodec = struct<KeyPackagesRequest>([
  ["client_identifiers", "clientIdentifiers", vectorV(clientIdCodec)],
  ["cipher_suites", "cipherSuites", vectorV(uint16)],
]);
export const requestGroupIdRequestCodec: Codec<RequestGroupIdRequest> = empty;
export const createGroupRequestCodec = struct<CreateGroupRequest>([
  ["group_info", "groupInfo", mlsMessageCodec],
  ["ratchet_tree", "ratchetTree", opaqueV],
  ["creator_token", "creatorToken", fanoutAuthTokenCodec],
]);
export const welcomeInfoRequestCodec = struct<WelcomeInfoRequest>([
  ["group_id", "groupId", opaqueV],
  ["epoch", "epoch", uint64],
  ["key_package_ref", "keyPackageRef", opaqueV],
]);
export const externalCommitInfoRequestCodec = struct<ExternalCommitInfoRequest>([["group_id", "groupId", opaqueV]]);
export const reInitializeGroupRequestCodec = struct<ReInitializeGroupRequest>([
  ["commit", "commit", mlsGroupUpdateCodec],
]);

// ---------------------------------------------------------------- DSRequestBody

/** `enum { ... } DSRequestType` (uint8): the draft's eight, then ours. */
export const DSRequestType = {
  delete_group: 0,
  add_clients: 1,
  remove_clients: 2,
  self_remove_client: 3,
  update_client: 4,
  external_join: 5,
  send_message: 6,
  key_packages: 7,
  request_group_id: 8,
  create_group: 9,
  welcome_info: 10,
  external_commit_info: 11,
  reinitialize_group: 12,
} as const;
export type DSRequestTypeName = keyof typeof DSRequestType;

export type DSRequestBody =
  | { readonly requestType: "delete_group"; readonly deleteGroupRequest: DeleteGroupRequest }
  | { readonly requestType: "add_clients"; readonly addClientsRequest: AddClientsRequest }
  | { readonly requestType: "remove_clients"; readonly removeClientsRequest: RemoveClientsRequest }
  | { readonly requestType: "self_remove_client"; readonly selfRemoveClientRequest: SelfRemoveClientRequest }
  | { readonly requestType: "update_client"; readonly updateClientRequest: UpdateClientRequest }
  | { readonly requestType: "external_join"; readonly externalJoinRequest: ExternalJoinRequest }
  | { readonly requestType: "send_message"; readonly sendMessageRequest: SendMessageRequest }
  | { readonly requestType: "key_packages"; readonly keyPackagesRequest: KeyPackagesRequest }
  | { readonly requestType: "request_group_id"; readonly requestGroupIdRequest: RequestGroupIdRequest }
  | { readonly requestType: "create_group"; readonly createGroupRequest: CreateGroupRequest }
  | { readonly requestType: "welcome_info"; readonly welcomeInfoRequest: WelcomeInfoRequest }
  | { readonly requestType: "external_commit_info"; readonly externalCommitInfoRequest: ExternalCommitInfoRequest }
  | { readonly requestType: "reinitialize_group"; readonly reInitializeGroupRequest: ReInitializeGroupRequest };

export const dsRequestTypeCodec: Codec<DSRequestTypeName> = enumCodec("DSRequestType", 8, DSRequestType);

export const dsRequestBodyCodec: Codec<DSRequestBody> = variant<DSRequestBody, "requestType">(
  "requestType",
  "request_type",
  dsRequestTypeCodec,
  {
    delete_group: struct([["delete_group_request", "deleteGroupRequest", deleteGroupRequestCodec]]),
    add_clients: struct([["add_clients_request", "addClientsRequest", addClientsRequestCodec]]),
    remove_clients: struct([["remove_clients_request", "removeClientsRequest", removeClientsRequestCodec]]),
    self_remove_client: struct([
      ["self_remove_client_request", "selfRemoveClientRequest", selfRemoveClientRequestCodec],
    ]),
    update_client: struct([["update_client_request", "updateClientRequest", updateClientRequestCodec]]),
    external_join: struct([["external_join_request", "externalJoinRequest", externalJoinRequestCodec]]),
    send_message: struct([["send_message_request", "sendMessageRequest", sendMessageRequestCodec]]),
    key_packages: struct([["key_packages_request", "keyPackagesRequest", keyPackagesRequestCodec]]),
    request_group_id: struct([["request_group_id_request", "requestGroupIdRequest", requestGroupIdRequestCodec]]),
    create_group: struct([["create_group_request", "createGroupRequest", createGroupRequestCodec]]),
    welcome_info: struct([["welcome_info_request", "welcomeInfoRequest", welcomeInfoRequestCodec]]),
    external_commit_info: struct([
      ["external_commit_info_request", "externalCommitInfoRequest", externalCommitInfoRequestCodec],
    ]),
    reinitialize_group: struct([
      ["reinitialize_group_request", "reInitializeGroupRequest", reInitializeGroupRequestCodec],
    ]),
  },
);

// ---------------------------------------------------------------- DSAuthData, DSRequest

/** `enum { anonymous(0), client_signature(1), joiner_signature(2), registered_client(3) } DSAuthType` (uint8). */
export const DSAuthType = { anonymous: 0, client_signature: 1, joiner_signature: 2, registered_client: 3 } as const;
export type DSAuthTypeName = keyof typeof DSAuthType;

export type DSAuthData =
  | { readonly authType: "anonymous" }
  | {
      readonly authType: "client_signature";
      readonly senderIndex: number;
      /** `opaque signature<0..255>`: one-byte length prefix (RFC 8446 notation, as in the draft). */
      readonly signature: Uint8Array;
    }
  | {
      readonly authType: "joiner_signature";
      readonly keyPackageRef: Uint8Array;
      readonly signature: Uint8Array;
    }
  | {
      /** A client registered at the DS that receives the request, signing with its registered key (key_packages). */
      readonly authType: "registered_client";
      readonly clientId: ClientID;
      /** Milliseconds since the Unix epoch; the DS accepts it within its clock skew, once. */
      readonly timestampMs: bigint;
      readonly signature: Uint8Array;
    };

export const dsAuthTypeCodec: Codec<DSAuthTypeName> = enumCodec("DSAuthType", 8, DSAuthType);

export const dsAuthDataCodec: Codec<DSAuthData> = variant<DSAuthData, "authType">("authType", "auth_type", dsAuthTypeCodec, {
  anonymous: empty,
  client_signature: struct([
    ["sender_index", "senderIndex", uint32],
    ["signature", "signature", opaque8],
  ]),
  joiner_signature: struct([
    ["key_package_ref", "keyPackageRef", opaqueV],
    ["signature", "signature", opaque8],
  ]),
  registered_client: struct([
    ["client_id", "clientId", clientIdCodec],
    ["timestamp_ms", "timestampMs", uint64],
    ["signature", "signature", opaque8],
  ]),
});

/** `struct { DSProtocolVersion version; DSRequestBody request_body; DSAuthData authentication_data; } DSRequest`. */
export interface DSRequest {
  readonly version: DSProtocolVersion;
  readonly requestBody: DSRequestBody;
  readonly authenticationData: DSAuthData;
}
export const dsRequestCodec = struct<DSRequest>([
  ["version", "version", dsProtocolVersionCodec],
  ["request_body", "requestBody", dsRequestBodyCodec],
  ["authentication_data", "authenticationData", dsAuthDataCodec],
]);

/** Signed with label "DSRequest" by the member at leaf `sender_index`. */
export interface ClientSignatureTBS {
  readonly protocolVersion: DSProtocolVersion;
  readonly requestBody: DSRequestBody;
  readonly senderIndex: number;
}
export const clientSignatureTBSCodec = struct<ClientSignatureTBS>([
  ["protocol_version", "protocolVersion", dsProtocolVersionCodec],
  ["request_body", "requestBody", dsRequestBodyCodec],
  ["sender_index", "senderIndex", uint32],
]);

/** Signed with label "DSJoinerRequest" with the signature key of the KeyPackage `key_package_ref` names. */
export interface JoinerSignatureTBS {
  readonly protocolVersion: DSProtocolVersion;
  readonly requestBody: DSRequestBody;
  readonly keyPackageRef: Uint8Array;
}
export const joinerSignatureTBSCodec = struct<JoinerSignatureTBS>([
  ["protocol_version", "protocolVersion", dsProtocolVersionCodec],
  ["request_body", "requestBody", dsRequestBodyCodec],
  ["key_package_ref", "keyPackageRef", opaqueV],
]);

/** Signed with label "DSRegisteredClientRequest" with the signature key `client_id` registered at the DS. */
export interface RegisteredClientSignatureTBS {
  readonly protocolVersion: DSProtocolVersion;
  readonly requestBody: DSRequestBody;
  readonly clientId: ClientID;
  readonly timestampMs: bigint;
}
export const registeredClientSignatureTBSCodec = struct<RegisteredClientSignatureTBS>([
  ["protocol_version", "protocolVersion", dsProtocolVersionCodec],
  ["request_body", "requestBody", dsRequestBodyCodec],
  ["client_id", "clientId", clientIdCodec],
  ["timestamp_ms", "timestampMs", uint64],
]);

// ---------------------------------------------------------------- DSResponse

/** `struct { DSErrorCode code; opaque message<V>; optional<uint64> current_epoch; } DSError`. */
export interface DSError {
  /** A DSErrorCode; unknown codes are kept as numbers. */
  readonly code: number;
  /** One UTF-8 sentence for humans. */
  readonly message: string;
  /** The group's current epoch, where the request was stale (wrong_epoch). */
  readonly currentEpoch?: bigint;
}
export const dsErrorCodec = struct<DSError>([
  ["code", "code", uint16],
  ["message", "message", utf8V],
  ["current_epoch", "currentEpoch", optional(uint64)],
]);

export const DSResponseType = {
  ok: 0,
  error: 1,
  welcome_info: 2,
  external_commit_info: 3,
  key_packages: 4,
  group_id: 5,
} as const;
export type DSResponseTypeName = keyof typeof DSResponseType;

export type DSResponseBody =
  | { readonly responseType: "ok" }
  | { readonly responseType: "error"; readonly error: DSError }
  | { readonly responseType: "welcome_info"; readonly ratchetTree: RatchetTree }
  | { readonly responseType: "external_commit_info"; readonly groupInfo: MLSMessage; readonly ratchetTree: RatchetTree }
  | { readonly responseType: "key_packages"; readonly keyPackages: readonly KeyPackage[] }
  | { readonly responseType: "group_id"; readonly groupId: Uint8Array };

export const dsResponseTypeCodec: Codec<DSResponseTypeName> = enumCodec("DSResponseType", 8, DSResponseType);

export const dsResponseBodyCodec: Codec<DSResponseBody> = variant<DSResponseBody, "responseType">(
  "responseType",
  "response_type",
  dsResponseTypeCodec,
  {
    ok: empty,
    error: struct([["error", "error", dsErrorCodec]]),
    welcome_info: struct([["ratchet_tree", "ratchetTree", ratchetTreeCodec]]),
    external_commit_info: struct([
      ["group_info", "groupInfo", mlsMessageCodec],
      ["ratchet_tree", "ratchetTree", ratchetTreeCodec],
    ]),
    key_packages: struct([["key_packages", "keyPackages", vectorV(keyPackageCodec)]]),
    group_id: struct([["group_id", "groupId", opaqueV]]),
  },
);

export interface DSResponse {
  readonly protocolVersion: DSProtocolVersion;
  readonly responseBody: DSResponseBody;
}
export const dsResponseCodec = struct<DSResponse>([
  ["protocol_version", "protocolVersion", dsProtocolVersionCodec],
  ["response_body", "responseBody", dsResponseBodyCodec],
]);

/** A DSResponse of type error. */
export function dsErrorResponse(code: number, message: string, currentEpoch?: bigint): DSResponse {
  const error: DSError = currentEpoch === undefined ? { code, message } : { code, message, currentEpoch };
  return { protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "error", error } };
}

/** A DSResponse of type ok. */
export function dsOkResponse(): DSResponse {
  return { protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "ok" } };
}

// ---------------------------------------------------------------- fanout

/** DSFanoutRequest without its signature: what the hub signs with label "DSFanoutRequest". */
export interface DSFanoutRequestTBS {
  readonly protocolVersion: DSProtocolVersion;
  /** DS domain of the hub that sends (and signed) the request. */
  readonly hubDomain: string;
  readonly recipientIds: readonly ClientID[];
  readonly fanoutAuthTokens: readonly FanoutAuthToken[];
  readonly mlsMessage: MLSMessage;
}
export interface DSFanoutRequest extends DSFanoutRequestTBS {
  readonly signature: Uint8Array;
}

/**
 * The DSFanoutRequest fields before mls_message. Exported so that the hub can
 * sign, and a guest read, the MLSMessage as bytes without re-encoding it.
 */
export const dsFanoutRequestHeadFields = [
  ["protocol_version", "protocolVersion", dsProtocolVersionCodec],
  ["hub_domain", "hubDomain", utf8V],
  ["recipient_ids", "recipientIds", vectorV(clientIdCodec)],
  ["fanout_auth_tokens", "fanoutAuthTokens", vectorV(fanoutAuthTokenCodec)],
] as const;
const fanoutTbsFields = [...dsFanoutRequestHeadFields, ["mls_message", "mlsMessage", mlsMessageCodec]] as const;
export const dsFanoutRequestTBSCodec = struct<DSFanoutRequestTBS>(fanoutTbsFields);
export const dsFanoutRequestCodec = struct<DSFanoutRequest>([...fanoutTbsFields, ["signature", "signature", opaqueV]]);

export const DSFanoutResponseType = { ok: 0, error: 1 } as const;
export type DSFanoutResponseTypeName = keyof typeof DSFanoutResponseType;

/** `struct { DSFanoutErrorCode code; opaque message<V>; ClientID rejected_recipients<V>; } DSFanoutError`. */
export interface DSFanoutError {
  readonly code: number;
  readonly message: string;
  readonly rejectedRecipients: readonly ClientID[];
}
export const dsFanoutErrorCodec = struct<DSFanoutError>([
  ["code", "code", uint16],
  ["message", "message", utf8V],
  ["rejected_recipients", "rejectedRecipients", vectorV(clientIdCodec)],
]);

export type DSFanoutResponseBody =
  | { readonly responseType: "ok" }
  | { readonly responseType: "error"; readonly error: DSFanoutError };

export const dsFanoutResponseTypeCodec: Codec<DSFanoutResponseTypeName> = enumCodec(
  "DSFanoutResponseType",
  8,
  DSFanoutResponseType,
);
export const dsFanoutResponseBodyCodec: Codec<DSFanoutResponseBody> = variant<DSFanoutResponseBody, "responseType">(
  "responseType",
  "response_type",
  dsFanoutResponseTypeCodec,
  { ok: empty, error: struct([["error", "error", dsFanoutErrorCodec]]) },
);

/** The draft writes `DSResponseBody response_body` here; that is a typo for DSFanoutResponseBody. */
export interface DSFanoutResponse {
  readonly protocolVersion: DSProtocolVersion;
  readonly responseBody: DSFanoutResponseBody;
}
export const dsFanoutResponseCodec = struct<DSFanoutResponse>([
  ["protocol_version", "protocolVersion", dsProtocolVersionCodec],
  ["response_body", "responseBody", dsFanoutResponseBodyCodec],
]);

// ---------------------------------------------------------------- local ClientService auth

/**
 * What a local client signs (label "ClientAuth") for proto ClientAuth: one
 * call of one method with these request fields, at this time, once.
 */
export interface ClientAuthTBS {
  readonly clientId: ClientID;
  readonly timestampMs: bigint;
  /** 16..64 random bytes; the DS accepts a (client_id, nonce) pair once while the timestamp is fresh. */
  readonly nonce: Uint8Array;
  /** The full RPC path, e.g. "mimi.ds.v1.ClientService/PublishKeyPackages", so a signature cannot be replayed on another RPC. */
  readonly rpcName: string;
  /** SHA-256 of the method's ClientRequestFields (below): the signature covers the request, not only the caller. */
  readonly requestDigest: Uint8Array;
}
export const clientAuthTBSCodec = struct<ClientAuthTBS>([
  ["client_id", "clientId", clientIdCodec],
  ["timestamp_ms", "timestampMs", uint64],
  ["nonce", "nonce", opaqueV],
  ["rpc_name", "rpcName", utf8V],
  ["request_digest", "requestDigest", opaqueV],
]);

/**
 * The fields of each ClientService request besides its ClientAuth, as the
 * TLS struct whose SHA-256 is ClientAuthTBS.request_digest. Each proto field
 * is written as received (proto3 defaults included), so any client can
 * compute it without canonical protobuf.
 */
export type ClientRequestFields =
  | {
      readonly method: "register";
      readonly signaturePublicKey: Uint8Array;
      readonly cipherSuite: number;
      readonly registrationCredential: Uint8Array;
    }
  | { readonly method: "publishKeyPackages"; readonly keyPackages: readonly Uint8Array[]; readonly lastResortKeyPackage: Uint8Array }
  | { readonly method: "receive"; readonly resumeAfter: bigint }
  | { readonly method: "acknowledgeMessages"; readonly sequence: bigint };

const registerFieldsCodec = struct<Extract<ClientRequestFields, { method: "register" }>>([
  ["signature_public_key", "signaturePublicKey", opaqueV],
  ["cipher_suite", "cipherSuite", uint32],
  ["registration_credential", "registrationCredential", opaqueV],
]);
const publishFieldsCodec = struct<Extract<ClientRequestFields, { method: "publishKeyPackages" }>>([
  ["key_packages", "keyPackages", vectorV(opaqueV)],
  ["last_resort_key_package", "lastResortKeyPackage", opaqueV],
]);
const receiveFieldsCodec = struct<Extract<ClientRequestFields, { method: "receive" }>>([["resume_after", "resumeAfter", uint64]]);
const ackFieldsCodec = struct<Extract<ClientRequestFields, { method: "acknowledgeMessages" }>>([["sequence", "sequence", uint64]]);

/**
 * ```tls
 * struct { opaque signature_public_key<V>; uint32 cipher_suite; opaque registration_credential<V>; } RegisterFields;
 * struct { opaque key_packages<V><V>; opaque last_resort_key_package<V>; } PublishKeyPackagesFields;
 * struct { uint64 resume_after; } ReceiveFields;
 * struct { uint64 sequence; } AcknowledgeMessagesFields;
 * ```
 */
export function encodeClientRequestFields(f: ClientRequestFields): Uint8Array {
  switch (f.method) {
    case "register":
      return encodeWith(registerFieldsCodec, f);
    case "publishKeyPackages":
      return encodeWith(publishFieldsCodec, f);
    case "receive":
      return encodeWith(receiveFieldsCodec, f);
    case "acknowledgeMessages":
      return encodeWith(ackFieldsCodec, f);
  }
}

// ---------------------------------------------------------------- registration credential

/**
 * The provider's statement that `clientId` may be registered with
 * `signaturePublicKey` between the two times: signed by an issuer key the DS
 * operator configures (`serve --registration-key`), label "DSRegistration".
 */
export interface RegistrationCredentialTBS {
  readonly clientId: ClientID;
  readonly signaturePublicKey: Uint8Array;
  readonly notBeforeMs: bigint;
  readonly notAfterMs: bigint;
}
export interface RegistrationCredential extends RegistrationCredentialTBS {
  /** Ed25519 SignWithLabel(issuer key, "DSRegistration", RegistrationCredentialTBS). */
  readonly signature: Uint8Array;
}
const registrationTBSFields = [
  ["client_id", "clientId", clientIdCodec],
  ["signature_public_key", "signaturePublicKey", opaqueV],
  ["not_before_ms", "notBeforeMs", uint64],
  ["not_after_ms", "notAfterMs", uint64],
] as const;
export const registrationCredentialTBSCodec = struct<RegistrationCredentialTBS>([...registrationTBSFields]);
export const registrationCredentialCodec = struct<RegistrationCredential>([
  ...registrationTBSFields,
  ["signature", "signature", opaqueV],
]);

// ---------------------------------------------------------------- top-level functions

type Limits = Partial<DecodeLimits>;

export const encodeDSRequest = (v: DSRequest): Uint8Array => encodeWith(dsRequestCodec, v);
export const decodeDSRequest = (b: Uint8Array, limits?: Limits): DSRequest =>
  decodeWith(dsRequestCodec, b, "DSRequest", limits);

export const encodeDSRequestBody = (v: DSRequestBody): Uint8Array => encodeWith(dsRequestBodyCodec, v);
export const decodeDSRequestBody = (b: Uint8Array, limits?: Limits): DSRequestBody =>
  decodeWith(dsRequestBodyCodec, b, "DSRequestBody", limits);

export const encodeDSResponse = (v: DSResponse): Uint8Array => encodeWith(dsResponseCodec, v);
export const decodeDSResponse = (b: Uint8Array, limits?: Limits): DSResponse =>
  decodeWith(dsResponseCodec, b, "DSResponse", limits);

export const encodeDSFanoutRequest = (v: DSFanoutRequest): Uint8Array => encodeWith(dsFanoutRequestCodec, v);
export const decodeDSFanoutRequest = (b: Uint8Array, limits?: Limits): DSFanoutRequest =>
  decodeWith(dsFanoutRequestCodec, b, "DSFanoutRequest", limits);

/** The signed part of a DSFanoutRequest; a full request is accepted too (its signature is ignored). */
export const encodeDSFanoutRequestTBS = (v: DSFanoutRequestTBS): Uint8Array => encodeWith(dsFanoutRequestTBSCodec, v);
export const decodeDSFanoutRequestTBS = (b: Uint8Array, limits?: Limits): DSFanoutRequestTBS =>
  decodeWith(dsFanoutRequestTBSCodec, b, "DSFanoutRequestTBS", limits);

export const encodeDSFanoutResponse = (v: DSFanoutResponse): Uint8Array => encodeWith(dsFanoutResponseCodec, v);
export const decodeDSFanoutResponse = (b: Uint8Array, limits?: Limits): DSFanoutResponse =>
  decodeWith(dsFanoutResponseCodec, b, "DSFanoutResponse", limits);

export const encodeClientSignatureTBS = (v: ClientSignatureTBS): Uint8Array => encodeWith(clientSignatureTBSCodec, v);
export const decodeClientSignatureTBS = (b: Uint8Array, limits?: Limits): ClientSignatureTBS =>
  decodeWith(clientSignatureTBSCodec, b, "ClientSignatureTBS", limits);

export const encodeRegisteredClientSignatureTBS = (v: RegisteredClientSignatureTBS): Uint8Array => encodeWith(registeredClientSignatureTBSCodec, v);
export const encodeJoinerSignatureTBS = (v: JoinerSignatureTBS): Uint8Array => encodeWith(joinerSignatureTBSCodec, v);
export const decodeJoinerSignatureTBS = (b: Uint8Array, limits?: Limits): JoinerSignatureTBS =>
  decodeWith(joinerSignatureTBSCodec, b, "JoinerSignatureTBS", limits);

export const encodeClientAuthTBS = (v: ClientAuthTBS): Uint8Array => encodeWith(clientAuthTBSCodec, v);
export const decodeClientAuthTBS = (b: Uint8Array, limits?: Limits): ClientAuthTBS =>
  decodeWith(clientAuthTBSCodec, b, "ClientAuthTBS", limits);

export const encodeRegistrationCredentialTBS = (v: RegistrationCredentialTBS): Uint8Array =>
  encodeWith(registrationCredentialTBSCodec, v);
export const encodeRegistrationCredential = (v: RegistrationCredential): Uint8Array => encodeWith(registrationCredentialCodec, v);
export const decodeRegistrationCredential = (b: Uint8Array, limits?: Limits): RegistrationCredential =>
  decodeWith(registrationCredentialCodec, b, "RegistrationCredential", limits);

export const encodeMLSGroupUpdate = (v: MLSGroupUpdate): Uint8Array => encodeWith(mlsGroupUpdateCodec, v);
export const decodeMLSGroupUpdate = (b: Uint8Array, limits?: Limits): MLSGroupUpdate =>
  decodeWith(mlsGroupUpdateCodec, b, "MLSGroupUpdate", limits);

export const encodePartialGroupInfo = (v: PartialGroupInfo): Uint8Array => encodeWith(partialGroupInfoCodec, v);
export const decodePartialGroupInfo = (b: Uint8Array, limits?: Limits): PartialGroupInfo =>
  decodeWith(partialGroupInfoCodec, b, "PartialGroupInfo", limits);

export const encodeFanoutAuthToken = (v: FanoutAuthToken): Uint8Array => encodeWith(fanoutAuthTokenCodec, v);
export const decodeFanoutAuthToken = (b: Uint8Array, limits?: Limits): FanoutAuthToken =>
  decodeWith(fanoutAuthTokenCodec, b, "FanoutAuthToken", limits);

export const encodeDSError = (v: DSError): Uint8Array => encodeWith(dsErrorCodec, v);
export const decodeDSError = (b: Uint8Array, limits?: Limits): DSError => decodeWith(dsErrorCodec, b, "DSError", limits);
