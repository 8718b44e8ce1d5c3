import fc from "fast-check";
import { beforeAll, describe, expect, test } from "vitest";
import {
  type Codec,
  DSErrorCode,
  DSFanoutErrorCode,
  DSRequestType,
  DSAuthType,
  DSResponseType,
  DS_PROTOCOL_VERSION,
  SignatureLabel,
  clientAuthTBSCodec,
  clientSignatureTBSCodec,
  decodeClientAuthTBS,
  decodeClientSignatureTBS,
  decodeDSError,
  decodeDSFanoutRequest,
  decodeDSFanoutRequestTBS,
  decodeDSFanoutResponse,
  decodeDSRequest,
  decodeDSRequestBody,
  decodeDSResponse,
  decodeFanoutAuthToken,
  decodeJoinerSignatureTBS,
  decodeMLSGroupUpdate,
  decodePartialGroupInfo,
  decodeWith,
  dsErrorResponse,
  dsErrorStatusName,
  dsOkResponse,
  encodeClientAuthTBS,
  encodeClientRequestFields,
  encodeClientSignatureTBS,
  encodeRegistrationCredential,
  decodeRegistrationCredential,
  encodeDSError,
  encodeDSFanoutRequest,
  encodeDSFanoutRequestTBS,
  encodeDSFanoutResponse,
  encodeDSRequest,
  encodeDSRequestBody,
  encodeDSResponse,
  encodeFanoutAuthToken,
  encodeJoinerSignatureTBS,
  encodeRegisteredClientSignatureTBS,
  encodeMLSGroupUpdate,
  encodePartialGroupInfo,
  encodeSignContent,
  encodeWith,
  joinerSignatureTBSCodec,
  DS_ERROR_STATUS,
} from "../../src/wire/index.js";
import { type Arbs, arbs } from "./arbitraries.js";
import { mlsFixtures } from "./fixtures.js";

let A: Arbs;
beforeAll(async () => {
  A = arbs(await mlsFixtures());
});

const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const runs = { numRuns: 60 };

/** value -> bytes -> value is identity, and bytes -> value -> bytes is identity. */
function roundTrip<T>(arb: () => fc.Arbitrary<T>, enc: (v: T) => Uint8Array, dec: (b: Uint8Array) => T): void {
  fc.assert(
    fc.property(arb(), (v) => {
      const bytes = enc(v);
      const back = dec(bytes);
      expect(back).toEqual(v);
      expect(toHex(enc(back))).toBe(toHex(bytes));
    }),
    runs,
  );
}

describe("round trips (fast-check)", () => {
  test("DSRequest", () => roundTrip(() => A.request, encodeDSRequest, (b) => decodeDSRequest(b)));
  test("DSRequestBody", () => roundTrip(() => A.requestBody, encodeDSRequestBody, (b) => decodeDSRequestBody(b)));
  test("DSResponse", () => roundTrip(() => A.response, encodeDSResponse, (b) => decodeDSResponse(b)));
  test("DSError", () => roundTrip(() => A.dsError, encodeDSError, (b) => decodeDSError(b)));
  test("DSFanoutRequest", () => roundTrip(() => A.fanoutRequest, encodeDSFanoutRequest, (b) => decodeDSFanoutRequest(b)));
  test("DSFanoutResponse", () =>
    roundTrip(() => A.fanoutResponse, encodeDSFanoutResponse, (b) => decodeDSFanoutResponse(b)));
  test("MLSGroupUpdate", () => roundTrip(() => A.groupUpdate, encodeMLSGroupUpdate, (b) => decodeMLSGroupUpdate(b)));
  test("PartialGroupInfo", () =>
    roundTrip(() => A.partialGroupInfo, encodePartialGroupInfo, (b) => decodePartialGroupInfo(b)));
  test("FanoutAuthToken", () => roundTrip(() => A.token, encodeFanoutAuthToken, (b) => decodeFanoutAuthToken(b)));
  test("ClientAuthTBS", () => roundTrip(() => A.clientAuthTBS, encodeClientAuthTBS, (b) => decodeClientAuthTBS(b)));
  test("RegistrationCredential", () =>
    roundTrip(() => A.registrationCredential, encodeRegistrationCredential, (b) => decodeRegistrationCredential(b)));
  test("ClientSignatureTBS", () =>
    roundTrip(
      () => fc.record({ protocolVersion: fc.constant(1), requestBody: A.requestBody, senderIndex: fc.nat() }),
      encodeClientSignatureTBS,
      (b) => decodeClientSignatureTBS(b),
    ));
  test("JoinerSignatureTBS", () =>
    roundTrip(
      () => fc.record({ protocolVersion: fc.constant(1), requestBody: A.requestBody, keyPackageRef: fc.uint8Array() }),
      encodeJoinerSignatureTBS,
      (b) => decodeJoinerSignatureTBS(b),
    ));
  test("DSFanoutRequestTBS is DSFanoutRequest minus its trailing signature", () =>
    fc.assert(
      fc.property(A.fanoutRequest, (req) => {
        const { signature, ...tbs } = req;
        const full = encodeDSFanoutRequest(req);
        const tbsBytes = encodeDSFanoutRequestTBS(tbs);
        expect(toHex(full).startsWith(toHex(tbsBytes))).toBe(true);
        expect(full.length - tbsBytes.length).toBe(signature.length + (signature.length < 64 ? 1 : 2));
        expect(decodeDSFanoutRequestTBS(tbsBytes)).toEqual(tbs);
      }),
      runs,
    ));
});

describe("fixed layouts", () => {
  test("enum numbers are the documented ones", () => {
    expect(DSRequestType).toEqual({
      delete_group: 0, add_clients: 1, remove_clients: 2, self_remove_client: 3, update_client: 4,
      external_join: 5, send_message: 6, key_packages: 7, request_group_id: 8, create_group: 9,
      welcome_info: 10, external_commit_info: 11, reinitialize_group: 12,
    });
    expect(DSResponseType).toEqual({ ok: 0, error: 1, welcome_info: 2, external_commit_info: 3, key_packages: 4, group_id: 5 });
    expect(Object.values(DSErrorCode)).toEqual([...[...Array(21).keys()].map((i) => i + 1)]);
    expect(DSAuthType).toEqual({ anonymous: 0, client_signature: 1, joiner_signature: 2, registered_client: 3 });
    expect(Object.values(DSFanoutErrorCode)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  test("DSRequest: anonymous request_group_id is version | type | auth", () => {
    const bytes = encodeDSRequest({
      version: 1,
      requestBody: { requestType: "request_group_id", requestGroupIdRequest: {} },
      authenticationData: { authType: "anonymous" },
    });
    expect(toHex(bytes)).toBe("0001" + "08" + "00");
  });

  test("client_signature: uint32 sender_index then a one-byte-length signature<0..255>", () => {
    const sig = new Uint8Array(200).fill(0xab);
    const bytes = encodeDSRequest({
      version: 1,
      requestBody: { requestType: "external_commit_info", externalCommitInfoRequest: { groupId: Uint8Array.of(0xaa) } },
      authenticationData: { authType: "client_signature", senderIndex: 7, signature: sig },
    });
    expect(toHex(bytes)).toBe("0001" + "0b" + "01aa" + "01" + "00000007" + "c8" + "ab".repeat(200));
    expect(() =>
      encodeDSRequest({
        version: 1,
        requestBody: { requestType: "request_group_id", requestGroupIdRequest: {} },
        authenticationData: { authType: "client_signature", senderIndex: 0, signature: new Uint8Array(256) },
      }),
    ).toThrow(/0\.\.255/);
  });

  test("registered_client: client_id<V>, uint64 timestamp_ms, then signature<0..255>; its TBS", () => {
    const requestBody = { requestType: "request_group_id", requestGroupIdRequest: {} } as const;
    const bytes = encodeDSRequest({
      version: 1,
      requestBody,
      authenticationData: { authType: "registered_client", clientId: Uint8Array.of(0x61, 0x62), timestampMs: 0x0102n, signature: Uint8Array.of(0xee) },
    });
    expect(toHex(bytes)).toBe("0001" + "08" + "03" + "026162" + "0000000000000102" + "01ee");
    expect(decodeDSRequest(bytes).authenticationData).toEqual({ authType: "registered_client", clientId: Uint8Array.of(0x61, 0x62), timestampMs: 0x0102n, signature: Uint8Array.of(0xee) });
    expect(toHex(encodeRegisteredClientSignatureTBS({ protocolVersion: 1, requestBody, clientId: Uint8Array.of(0x61), timestampMs: 2n }))).toBe("0001" + "08" + "0161" + "0000000000000002");
    expect(SignatureLabel.DSRegisteredClientRequest).toBe("DSRegisteredClientRequest");
  });

  test("DSError with current_epoch", () => {
    const r = dsErrorResponse(DSErrorCode.wrong_epoch, "stale", 5n);
    expect(toHex(encodeDSResponse(r))).toBe("0001" + "01" + "0009" + "05" + Buffer.from("stale").toString("hex") + "01" + "0000000000000005");
    expect(decodeDSResponse(encodeDSResponse(r))).toEqual(r);
    const noEpoch = dsErrorResponse(DSErrorCode.unknown_group, "no such group");
    expect(noEpoch.responseBody).toEqual({ responseType: "error", error: { code: 7, message: "no such group" } });
    expect(toHex(encodeDSResponse(dsOkResponse()))).toBe("000100");
    expect(DS_PROTOCOL_VERSION).toBe(1);
  });

  test("unknown DS error codes and versions decode as-is", () => {
    const r = decodeDSResponse(encodeDSResponse({ protocolVersion: 77, responseBody: { responseType: "error", error: { code: 999, message: "?" } } }));
    expect(r.protocolVersion).toBe(77);
    expect(r.responseBody).toEqual({ responseType: "error", error: { code: 999, message: "?" } });
    expect(dsErrorStatusName(999)).toBe("Unknown");
  });

  test("status mapping", () => {
    expect(dsErrorStatusName(DSErrorCode.decode_error)).toBe("InvalidArgument");
    expect(dsErrorStatusName(DSErrorCode.too_large)).toBe("ResourceExhausted");
    expect(dsErrorStatusName(DSErrorCode.authentication_failed)).toBe("Unauthenticated");
    expect(dsErrorStatusName(DSErrorCode.blocked)).toBe("PermissionDenied");
    expect(dsErrorStatusName(DSErrorCode.no_key_packages)).toBe("NotFound");
    expect(dsErrorStatusName(DSErrorCode.group_exists)).toBe("AlreadyExists");
    expect(dsErrorStatusName(DSErrorCode.missing_proposals)).toBe("FailedPrecondition");
    expect(dsErrorStatusName(DSErrorCode.unavailable)).toBe("Unavailable");
    expect(dsErrorStatusName(DSErrorCode.internal)).toBe("Internal");
    expect(Object.keys(DS_ERROR_STATUS).sort()).toEqual(Object.keys(DSErrorCode).sort());
  });

  test("TBS structs: protocol_version | request_body | signer", () => {
    const requestBody = { requestType: "request_group_id", requestGroupIdRequest: {} } as const;
    expect(toHex(encodeClientSignatureTBS({ protocolVersion: 1, requestBody, senderIndex: 3 }))).toBe("0001" + "08" + "00000003");
    expect(toHex(encodeJoinerSignatureTBS({ protocolVersion: 1, requestBody, keyPackageRef: Uint8Array.of(9, 9) }))).toBe("0001" + "08" + "020909");
    expect(
      toHex(
        encodeClientAuthTBS({ clientId: Uint8Array.of(0x61), timestampMs: 1n, nonce: Uint8Array.of(7, 7), rpcName: "Receive", requestDigest: Uint8Array.of(0xdd) }),
      ),
    ).toBe("0161" + "0000000000000001" + "020707" + "07" + Buffer.from("Receive").toString("hex") + "01dd");
    // The request fields whose SHA-256 is request_digest, one struct per method.
    expect(toHex(encodeClientRequestFields({ method: "acknowledgeMessages", sequence: 2n }))).toBe("0000000000000002");
    expect(toHex(encodeClientRequestFields({ method: "receive", resumeAfter: 0n }))).toBe("0000000000000000");
    expect(
      toHex(encodeClientRequestFields({ method: "register", signaturePublicKey: Uint8Array.of(1), cipherSuite: 1, registrationCredential: new Uint8Array() })),
    ).toBe("0101" + "00000001" + "00");
    expect(
      toHex(encodeClientRequestFields({ method: "publishKeyPackages", keyPackages: [Uint8Array.of(5), Uint8Array.of(6, 6)], lastResortKeyPackage: new Uint8Array() })),
    ).toBe("05" + "0105" + "020606" + "00");
    expect(
      toHex(
        encodeRegistrationCredential({ clientId: Uint8Array.of(0x61), signaturePublicKey: Uint8Array.of(2), notBeforeMs: 1n, notAfterMs: 2n, signature: Uint8Array.of(3) }),
      ),
    ).toBe("0161" + "0102" + "0000000000000001" + "0000000000000002" + "0103");
    // codecs are exported for composition
    const codecs: Codec<unknown>[] = [clientSignatureTBSCodec, joinerSignatureTBSCodec, clientAuthTBSCodec] as Codec<unknown>[];
    expect(codecs.length).toBe(3);
  });

  test("SignContent for SignWithLabel", () => {
    const b = encodeSignContent(SignatureLabel.DSRequest, Uint8Array.of(1, 2));
    const label = Buffer.from("MLS 1.0 DSRequest");
    expect(toHex(b)).toBe(label.length.toString(16).padStart(2, "0") + label.toString("hex") + "020102");
  });

  test("large vectors use 2- and 4-byte varint headers", () => {
    for (const [n, header] of [[63, "3f"], [64, "4040"], [16383, "7fff"], [16384, "80004000"]] as const) {
      const b = encodeFanoutAuthToken({ token: new Uint8Array(n) });
      expect(toHex(b.subarray(0, header.length / 2))).toBe(header);
      expect(decodeFanoutAuthToken(b).token.length).toBe(n);
    }
  });

  test("decodeWith returns values that do not alias the input", () => {
    const b = encodeFanoutAuthToken({ token: Uint8Array.of(1, 2, 3) });
    const t = decodeWith({ encode: () => {}, decode: (d) => d.field("token", { encode: () => {}, decode: (x) => x.bytes(x.remaining) }) }, b, "x");
    b[1] = 99;
    expect([...t]).toEqual([3, 1, 2, 3]);
    expect(encodeWith({ encode: (e, v: number) => e.uint8(v), decode: (d) => d.uint8() }, 5)).toEqual(Uint8Array.of(5));
  });
});
