// fast-check arbitraries for every DS struct; MLS-bearing fields pick among real ts-mls objects.
import fc from "fast-check";
import type { Extension, KeyPackage, MLSMessage, RatchetTree } from "ts-mls";
import {
  type ClientAuthTBS,
  type RegistrationCredential,
  type DSAuthData,
  type DSError,
  type DSFanoutRequest,
  type DSFanoutResponse,
  type DSRequest,
  type DSRequestBody,
  type DSResponse,
  type FanoutAuthToken,
  type MLSGroupUpdate,
  type PartialGroupInfo,
  decodeKeyPackageBytes,
  decodeMLSMessage,
  decodeRatchetTreeBytes,
  encodeKeyPackageBytes,
  encodeMLSMessage,
  encodeRatchetTreeBytes,
} from "../../src/wire/index.js";
import type { MlsFixtures } from "./fixtures.js";

/** Byte strings around the one/two-byte varint boundary. */
export const bytes = (max = 90): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: max });
export const text = fc.string({ unit: "grapheme", maxLength: 30 });
export const u16 = fc.integer({ min: 0, max: 0xffff });
export const u32 = fc.integer({ min: 0, max: 0xffffffff });
export const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
export const sig255 = fc.uint8Array({ maxLength: 255 });

export interface Arbs {
  mlsMessage: fc.Arbitrary<MLSMessage>;
  groupInfoMessage: fc.Arbitrary<MLSMessage>;
  keyPackage: fc.Arbitrary<KeyPackage>;
  ratchetTree: fc.Arbitrary<RatchetTree>;
  extension: fc.Arbitrary<Extension>;
  token: fc.Arbitrary<FanoutAuthToken>;
  partialGroupInfo: fc.Arbitrary<PartialGroupInfo>;
  groupUpdate: fc.Arbitrary<MLSGroupUpdate>;
  requestBody: fc.Arbitrary<DSRequestBody>;
  authData: fc.Arbitrary<DSAuthData>;
  request: fc.Arbitrary<DSRequest>;
  dsError: fc.Arbitrary<DSError>;
  response: fc.Arbitrary<DSResponse>;
  fanoutRequest: fc.Arbitrary<DSFanoutRequest>;
  fanoutResponse: fc.Arbitrary<DSFanoutResponse>;
  clientAuthTBS: fc.Arbitrary<ClientAuthTBS>;
  registrationCredential: fc.Arbitrary<RegistrationCredential>;
}

export function arbs(f: MlsFixtures): Arbs {
  // Canonical decoded forms, so deep equality after a round trip is exact.
  const messages = f.messages.map((m) => decodeMLSMessage(encodeMLSMessage(m)));
  const mlsMessage = fc.constantFrom(...messages);
  const groupInfoMessage = fc.constant(decodeMLSMessage(encodeMLSMessage(f.groupInfo)));
  const keyPackage = fc.constantFrom(...f.keyPackages.map((k) => decodeKeyPackageBytes(encodeKeyPackageBytes(k))));
  const ratchetTree = fc.constant(decodeRatchetTreeBytes(encodeRatchetTreeBytes(f.ratchetTree)));
  const extension: fc.Arbitrary<Extension> = fc.record({
    extensionType: fc.oneof(
      fc.integer({ min: 6, max: 0xffff }),
      fc.constantFrom("application_id", "ratchet_tree", "required_capabilities", "external_pub", "external_senders" as const),
    ),
    extensionData: bytes(),
  });
  const token = fc.record({ token: bytes() });
  const partialGroupInfo = fc.record({
    groupInfoExtensions: fc.array(extension, { maxLength: 3 }),
    signature: bytes(),
  });
  const groupUpdate = fc.record({ commit: mlsMessage, partialGroupInfo });
  const clientIds = fc.array(bytes(40), { maxLength: 4 });

  const requestBody: fc.Arbitrary<DSRequestBody> = fc.oneof(
    fc.record({ requestType: fc.constant("delete_group" as const), deleteGroupRequest: fc.record({ groupUpdate }) }),
    fc.record({
      requestType: fc.constant("add_clients" as const),
      addClientsRequest: fc.record({ groupUpdate, welcomeMessages: fc.array(mlsMessage, { maxLength: 3 }) }),
    }),
    fc.record({ requestType: fc.constant("remove_clients" as const), removeClientsRequest: fc.record({ groupUpdate }) }),
    fc.record({
      requestType: fc.constant("self_remove_client" as const),
      selfRemoveClientRequest: fc.record({ proposal: mlsMessage }),
    }),
    fc.record({
      requestType: fc.constant("update_client" as const),
      updateClientRequest: fc.record({ groupUpdate, token }, { requiredKeys: ["groupUpdate"] }),
    }),
    fc.record({ requestType: fc.constant("external_join" as const), externalJoinRequest: fc.record({ groupUpdate }) }),
    fc.record({
      requestType: fc.constant("send_message" as const),
      sendMessageRequest: fc.record({ applicationMessage: mlsMessage }),
    }),
    fc.record({
      requestType: fc.constant("key_packages" as const),
      keyPackagesRequest: fc.record({ clientIdentifiers: clientIds, cipherSuites: fc.array(u16, { maxLength: 40 }) }),
    }),
    fc.record({ requestType: fc.constant("request_group_id" as const), requestGroupIdRequest: fc.constant({}) }),
    fc.record({
      requestType: fc.constant("create_group" as const),
      createGroupRequest: fc.record({
        groupInfo: groupInfoMessage,
        ratchetTree: ratchetTree.map(encodeRatchetTreeBytes),
        creatorToken: token,
      }),
    }),
    fc.record({
      requestType: fc.constant("welcome_info" as const),
      welcomeInfoRequest: fc.record({ groupId: bytes(), epoch: u64, keyPackageRef: bytes(64) }),
    }),
    fc.record({
      requestType: fc.constant("external_commit_info" as const),
      externalCommitInfoRequest: fc.record({ groupId: bytes() }),
    }),
    fc.record({
      requestType: fc.constant("reinitialize_group" as const),
      reInitializeGroupRequest: fc.record({ commit: groupUpdate }),
    }),
  );

  const authData: fc.Arbitrary<DSAuthData> = fc.oneof(
    fc.constant({ authType: "anonymous" as const }),
    fc.record({ authType: fc.constant("client_signature" as const), senderIndex: u32, signature: sig255 }),
    fc.record({ authType: fc.constant("joiner_signature" as const), keyPackageRef: bytes(64), signature: sig255 }),
    fc.record({ authType: fc.constant("registered_client" as const), clientId: bytes(64), timestampMs: u64, signature: sig255 }),
  );
  const request = fc.record({ version: u16, requestBody, authenticationData: authData });

  const dsError = fc.record({ code: u16, message: text, currentEpoch: u64 }, { requiredKeys: ["code", "message"] });
  const response: fc.Arbitrary<DSResponse> = fc.record({
    protocolVersion: u16,
    responseBody: fc.oneof(
      fc.constant({ responseType: "ok" as const }),
      fc.record({ responseType: fc.constant("error" as const), error: dsError }),
      fc.record({ responseType: fc.constant("welcome_info" as const), ratchetTree }),
      fc.record({ responseType: fc.constant("external_commit_info" as const), groupInfo: groupInfoMessage, ratchetTree }),
      fc.record({ responseType: fc.constant("key_packages" as const), keyPackages: fc.array(keyPackage, { maxLength: 3 }) }),
      fc.record({ responseType: fc.constant("group_id" as const), groupId: bytes() }),
    ),
  });

  const fanoutRequest = fc.record({
    protocolVersion: u16,
    hubDomain: fc.domain(),
    recipientIds: clientIds,
    fanoutAuthTokens: fc.array(token, { maxLength: 4 }),
    mlsMessage,
    signature: bytes(),
  });
  const fanoutResponse: fc.Arbitrary<DSFanoutResponse> = fc.record({
    protocolVersion: u16,
    responseBody: fc.oneof(
      fc.constant({ responseType: "ok" as const }),
      fc.record({
        responseType: fc.constant("error" as const),
        error: fc.record({ code: u16, message: text, rejectedRecipients: clientIds }),
      }),
    ),
  });
  const clientAuthTBS = fc.record({ clientId: bytes(), timestampMs: u64, nonce: bytes(64), rpcName: text, requestDigest: bytes(32) });
  const registrationCredential = fc.record({
    clientId: bytes(),
    signaturePublicKey: bytes(),
    notBeforeMs: u64,
    notAfterMs: u64,
    signature: bytes(70),
  });

  return {
    mlsMessage,
    groupInfoMessage,
    keyPackage,
    ratchetTree,
    extension,
    token,
    partialGroupInfo,
    groupUpdate,
    requestBody,
    authData,
    request,
    dsError,
    response,
    fanoutRequest,
    fanoutResponse,
    clientAuthTBS,
    registrationCredential,
  };
}
