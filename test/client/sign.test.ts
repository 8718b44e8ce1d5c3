import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { verifyWithLabel } from "ts-mls/crypto/signature.js";
import {
  DS_PROTOCOL_VERSION,
  type DSRequestBody,
  decodeDSRequest,
  encodeClientAuthTBS,
  encodeClientRequestFields,
  encodeClientSignatureTBS,
  encodeDSRequest,
  encodeJoinerSignatureTBS,
} from "../../src/wire/index.js";
import {
  ClientRpcName,
  anonymous,
  buildDSRequest,
  clientRequestDigest,
  newClientAuthNonce,
  signClientAuth,
  verifyClientAuth,
  verifyDSRequestSignature,
} from "../../src/client/index.js";

const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));

const body: DSRequestBody = {
  requestType: "welcome_info",
  welcomeInfoRequest: { groupId: Uint8Array.of(1, 2, 3), epoch: 7n, keyPackageRef: new Uint8Array(32).fill(9) },
};

describe("DSRequest signatures", () => {
  it("client_signature verifies over the re-encoded ClientSignatureTBS (label DSRequest)", async () => {
    const keys = await cs.signature.keygen();
    const req = await buildDSRequest(body, {
      kind: "member",
      senderIndex: 5,
      signaturePrivateKey: keys.signKey,
      signature: cs.signature,
    });
    const decoded = decodeDSRequest(encodeDSRequest(req));
    expect(decoded.version).toBe(DS_PROTOCOL_VERSION);
    const auth = decoded.authenticationData;
    if (auth.authType !== "client_signature") throw new Error("expected client_signature");
    expect(auth.senderIndex).toBe(5);
    const tbs = encodeClientSignatureTBS({
      protocolVersion: decoded.version,
      requestBody: decoded.requestBody,
      senderIndex: auth.senderIndex,
    });
    expect(await verifyWithLabel(keys.publicKey, "DSRequest", tbs, auth.signature, cs.signature)).toBe(true);
    expect(await verifyDSRequestSignature(decoded, keys.publicKey, cs.signature)).toBe(true);
    // Another label, key, index or body does not verify.
    expect(await verifyWithLabel(keys.publicKey, "DSJoinerRequest", tbs, auth.signature, cs.signature)).toBe(false);
    const other = await cs.signature.keygen();
    expect(await verifyDSRequestSignature(decoded, other.publicKey, cs.signature)).toBe(false);
    const moved = { ...decoded, authenticationData: { ...auth, senderIndex: 6 } };
    expect(await verifyDSRequestSignature(moved, keys.publicKey, cs.signature)).toBe(false);
    const changed = {
      ...decoded,
      requestBody: { ...body, welcomeInfoRequest: { ...body.welcomeInfoRequest, epoch: 8n } },
    } as typeof decoded;
    expect(await verifyDSRequestSignature(changed, keys.publicKey, cs.signature)).toBe(false);
  });

  it("joiner_signature verifies over JoinerSignatureTBS (label DSJoinerRequest)", async () => {
    const keys = await cs.signature.keygen();
    const ref = new Uint8Array(32).fill(4);
    const req = await buildDSRequest(body, {
      kind: "joiner",
      keyPackageRef: ref,
      signaturePrivateKey: keys.signKey,
      signature: cs.signature,
    });
    const decoded = decodeDSRequest(encodeDSRequest(req));
    const auth = decoded.authenticationData;
    if (auth.authType !== "joiner_signature") throw new Error("expected joiner_signature");
    expect(auth.keyPackageRef).toEqual(ref);
    const tbs = encodeJoinerSignatureTBS({ protocolVersion: 1, requestBody: decoded.requestBody, keyPackageRef: ref });
    expect(await verifyWithLabel(keys.publicKey, "DSJoinerRequest", tbs, auth.signature, cs.signature)).toBe(true);
    expect(await verifyDSRequestSignature(decoded, keys.publicKey, cs.signature)).toBe(true);
  });

  it("anonymous requests carry no signature", async () => {
    const req = await buildDSRequest({ requestType: "request_group_id", requestGroupIdRequest: {} }, anonymous);
    expect(req.authenticationData).toEqual({ authType: "anonymous" });
    expect(encodeDSRequest(req)).toEqual(Uint8Array.of(0, 1, 8, 0));
  });
});

describe("ClientAuth", () => {
  it("rpc_name is the full method name", () => {
    expect(ClientRpcName).toEqual({
      register: "mimi.ds.v1.ClientService/Register",
      publishKeyPackages: "mimi.ds.v1.ClientService/PublishKeyPackages",
      receive: "mimi.ds.v1.ClientService/Receive",
      acknowledgeMessages: "mimi.ds.v1.ClientService/AcknowledgeMessages",
    });
  });

  it("signs ClientAuthTBS with label ClientAuth", async () => {
    const keys = await cs.signature.keygen();
    const tbs = {
      clientId: new TextEncoder().encode("alice:1@a.example"),
      timestampMs: 1_700_000_000_000n,
      nonce: newClientAuthNonce(),
      rpcName: ClientRpcName.receive,
      requestDigest: await clientRequestDigest({ method: "receive", resumeAfter: 5n }),
    };
    const sig = await signClientAuth(tbs, { signaturePrivateKey: keys.signKey, signature: cs.signature });
    expect(await verifyWithLabel(keys.publicKey, "ClientAuth", encodeClientAuthTBS(tbs), sig, cs.signature)).toBe(true);
    expect(await verifyClientAuth(tbs, sig, keys.publicKey, cs.signature)).toBe(true);
    expect(await verifyClientAuth({ ...tbs, rpcName: ClientRpcName.register }, sig, keys.publicKey, cs.signature)).toBe(
      false,
    );
    // Another resume point, another nonce: another signature.
    const otherFields = await clientRequestDigest({ method: "receive", resumeAfter: 6n });
    expect(await verifyClientAuth({ ...tbs, requestDigest: otherFields }, sig, keys.publicKey, cs.signature)).toBe(false);
    expect(await verifyClientAuth({ ...tbs, nonce: newClientAuthNonce() }, sig, keys.publicKey, cs.signature)).toBe(false);
  });

  it("request_digest is SHA-256 of the request fields", async () => {
    const fields = { method: "acknowledgeMessages", sequence: 9n } as const;
    const expected = createHash("sha256").update(encodeClientRequestFields(fields)).digest();
    expect(Buffer.from(await clientRequestDigest(fields)).equals(expected)).toBe(true);
    expect(newClientAuthNonce().length).toBe(16);
  });
});
