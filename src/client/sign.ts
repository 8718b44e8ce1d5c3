// Request signatures of the MIMI DS (docs/protocol.md, "Signatures on requests"
// and "Local clients"): RFC 9420 SignWithLabel over our TLS-serialized TBS
// structs, with the signature scheme of the signer's MLS cipher suite.
import type { Signature } from "ts-mls/crypto/signature.js";
import { signWithLabel, verifyWithLabel } from "ts-mls/crypto/signature.js";
import {
  type ClientAuthTBS,
  type ClientRequestFields,
  type DSAuthData,
  type DSProtocolVersion,
  type DSRequest,
  type DSRequestBody,
  DS_PROTOCOL_VERSION,
  SignatureLabel,
  encodeClientAuthTBS,
  encodeClientRequestFields,
  encodeClientSignatureTBS,
  encodeJoinerSignatureTBS,
  encodeRegisteredClientSignatureTBS,
} from "../wire/index.js";

/** A signature private key and the scheme it belongs to (`CiphersuiteImpl.signature`). */
export interface SigningKey {
  readonly signaturePrivateKey: Uint8Array;
  readonly signature: Signature;
}

/**
 * How a DSRequest is authenticated:
 * - `anonymous`: nothing (request_group_id, key_packages, external_commit_info, external_join);
 * - `member`: client_signature by the member at leaf `senderIndex` ("DSRequest" label);
 * - `joiner`: joiner_signature by the KeyPackage named `keyPackageRef` ("DSJoinerRequest" label);
 * - `registered`: registered_client by a client of the DS the request goes to, with the key it
 *   registered and the current time ("DSRegisteredClientRequest" label; key_packages).
 */
export type RequestAuth =
  | { readonly kind: "anonymous" }
  | ({ readonly kind: "member"; readonly senderIndex: number } & SigningKey)
  | ({ readonly kind: "joiner"; readonly keyPackageRef: Uint8Array } & SigningKey)
  | ({ readonly kind: "registered"; readonly clientId: string; readonly now?: () => number } & SigningKey);

export const anonymous: RequestAuth = Object.freeze({ kind: "anonymous" });

// A registered_client signature is accepted once: two identical requests signed in the
// same millisecond would be the same bytes (Ed25519 is deterministic), so each client's
// timestamps are made strictly increasing within this process.
const lastTimestamp = new Map<string, bigint>();
function freshTimestamp(clientId: string, now: number): bigint {
  const prev = lastTimestamp.get(clientId);
  let t = BigInt(Math.floor(now));
  if (prev !== undefined && t <= prev) t = prev + 1n;
  lastTimestamp.set(clientId, t);
  return t;
}

/** The DSAuthData for `body` under `auth`. */
export async function authenticate(
  body: DSRequestBody,
  auth: RequestAuth,
  version: DSProtocolVersion = DS_PROTOCOL_VERSION,
): Promise<DSAuthData> {
  switch (auth.kind) {
    case "anonymous":
      return { authType: "anonymous" };
    case "member": {
      const tbs = encodeClientSignatureTBS({ protocolVersion: version, requestBody: body, senderIndex: auth.senderIndex });
      const signature = await signWithLabel(auth.signaturePrivateKey, SignatureLabel.DSRequest, tbs, auth.signature);
      return { authType: "client_signature", senderIndex: auth.senderIndex, signature };
    }
    case "joiner": {
      const tbs = encodeJoinerSignatureTBS({
        protocolVersion: version,
        requestBody: body,
        keyPackageRef: auth.keyPackageRef,
      });
      const signature = await signWithLabel(auth.signaturePrivateKey, SignatureLabel.DSJoinerRequest, tbs, auth.signature);
      return { authType: "joiner_signature", keyPackageRef: auth.keyPackageRef, signature };
    }
    case "registered": {
      const clientId = new TextEncoder().encode(auth.clientId);
      const timestampMs = freshTimestamp(auth.clientId, (auth.now ?? Date.now)());
      const tbs = encodeRegisteredClientSignatureTBS({ protocolVersion: version, requestBody: body, clientId, timestampMs });
      const signature = await signWithLabel(auth.signaturePrivateKey, SignatureLabel.DSRegisteredClientRequest, tbs, auth.signature);
      return { authType: "registered_client", clientId, timestampMs, signature };
    }
  }
}

/** A complete signed DSRequest. */
export async function buildDSRequest(
  body: DSRequestBody,
  auth: RequestAuth,
  version: DSProtocolVersion = DS_PROTOCOL_VERSION,
): Promise<DSRequest> {
  return { version, requestBody: body, authenticationData: await authenticate(body, auth, version) };
}

/**
 * Checks a DSRequest's client_signature or joiner_signature against a public
 * key (what the DS does; here for tests and for proxies). Anonymous requests
 * have nothing to verify and give false.
 */
export async function verifyDSRequestSignature(
  request: DSRequest,
  signaturePublicKey: Uint8Array,
  signature: Signature,
): Promise<boolean> {
  const a = request.authenticationData;
  switch (a.authType) {
    case "anonymous":
      return false;
    case "client_signature": {
      const tbs = encodeClientSignatureTBS({
        protocolVersion: request.version,
        requestBody: request.requestBody,
        senderIndex: a.senderIndex,
      });
      return verifyWithLabel(signaturePublicKey, SignatureLabel.DSRequest, tbs, a.signature, signature);
    }
    case "joiner_signature": {
      const tbs = encodeJoinerSignatureTBS({
        protocolVersion: request.version,
        requestBody: request.requestBody,
        keyPackageRef: a.keyPackageRef,
      });
      return verifyWithLabel(signaturePublicKey, SignatureLabel.DSJoinerRequest, tbs, a.signature, signature);
    }
    case "registered_client": {
      const tbs = encodeRegisteredClientSignatureTBS({
        protocolVersion: request.version,
        requestBody: request.requestBody,
        clientId: a.clientId,
        timestampMs: a.timestampMs,
      });
      return verifyWithLabel(signaturePublicKey, SignatureLabel.DSRegisteredClientRequest, tbs, a.signature, signature);
    }
  }
}

/** Bytes of a ClientAuth nonce (the DS accepts 16 to 64). */
export const CLIENT_AUTH_NONCE_LENGTH = 16;

/** A fresh random ClientAuth nonce (WebCrypto: Node and browsers). */
export function newClientAuthNonce(): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(CLIENT_AUTH_NONCE_LENGTH));
}

/** ClientAuthTBS.request_digest: SHA-256 of the TLS-serialized request fields (docs/protocol.md). */
export async function clientRequestDigest(fields: ClientRequestFields): Promise<Uint8Array> {
  const bytes = encodeClientRequestFields(fields);
  return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

/** ClientAuth.signature: SignWithLabel(key, "ClientAuth", ClientAuthTBS). */
export function signClientAuth(tbs: ClientAuthTBS, key: SigningKey): Promise<Uint8Array> {
  return signWithLabel(key.signaturePrivateKey, SignatureLabel.ClientAuth, encodeClientAuthTBS(tbs), key.signature);
}

export function verifyClientAuth(
  tbs: ClientAuthTBS,
  signatureBytes: Uint8Array,
  signaturePublicKey: Uint8Array,
  signature: Signature,
): Promise<boolean> {
  return verifyWithLabel(signaturePublicKey, SignatureLabel.ClientAuth, encodeClientAuthTBS(tbs), signatureBytes, signature);
}
