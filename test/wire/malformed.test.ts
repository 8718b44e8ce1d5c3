import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, test } from "vitest";
import {
  type DSRequest,
  WireDecodeError,
  type WireDecodeErrorKind,
  decodeDSFanoutRequest,
  decodeDSFanoutResponse,
  decodeDSRequest,
  decodeDSResponse,
  decodeExternalSenders,
  decodeMLSMessage,
  decodeWith,
  encodeDSRequest,
  encodeDSResponse,
  encodeMLSMessage,
  externalInitCodec,
  groupSecretsCodec,
  isLastResort,
  makeLastResortExtension,
  readFanoutAuthToken,
} from "../../src/wire/index.js";
import { type MlsFixtures, mlsFixtures } from "./fixtures.js";

let F: MlsFixtures;
beforeAll(async () => {
  F = await mlsFixtures();
});

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, "hex"));
const cat = (...parts: (Uint8Array | number[])[]): Uint8Array => Uint8Array.from(parts.flatMap((p) => [...p]));

function decodeError(fn: () => unknown): WireDecodeError {
  try {
    fn();
  } catch (e) {
    if (e instanceof WireDecodeError) return e;
    throw new Error(`expected WireDecodeError, got ${String(e)}`);
  }
  throw new Error("expected WireDecodeError, decoding succeeded");
}

function expectError(fn: () => unknown, kind: WireDecodeErrorKind, path: string, offset?: number): WireDecodeError {
  const e = decodeError(fn);
  expect({ kind: e.kind, path: e.path }).toEqual({ kind, path });
  if (offset !== undefined) expect(e.offset).toBe(offset);
  expect(e.message).toContain(path);
  expect(e.message).toContain(kind);
  return e;
}

function addClientsRequest(): DSRequest {
  return {
    version: 1,
    requestBody: {
      requestType: "add_clients",
      addClientsRequest: {
        groupUpdate: {
          commit: F.commit,
          partialGroupInfo: { groupInfoExtensions: [makeLastResortExtension()], signature: new Uint8Array(64).fill(1) },
        },
        welcomeMessages: [F.welcome, F.welcome],
      },
    },
    authenticationData: { authType: "client_signature", senderIndex: 0, signature: new Uint8Array(64).fill(2) },
  };
}

describe("truncation", () => {
  test("every proper prefix of a real DSRequest fails with truncated or malformed", () => {
    const full = encodeDSRequest(addClientsRequest());
    expect(decodeDSRequest(full)).toBeDefined();
    const kinds = new Map<string, number>();
    for (let n = 0; n < full.length; n++) {
      const e = decodeError(() => decodeDSRequest(full.subarray(0, n)));
      expect(["truncated", "malformed"]).toContain(e.kind);
      expect(e.offset).toBeLessThanOrEqual(n);
      kinds.set(e.kind, (kinds.get(e.kind) ?? 0) + 1);
    }
    expect(kinds.get("truncated")).toBeGreaterThan(0);
  });

  test("a truncated header says where", () => {
    expectError(() => decodeDSRequest(Uint8Array.of(0x00)), "truncated", "DSRequest.version", 0);
    expectError(() => decodeDSRequest(Uint8Array.of(0, 1)), "truncated", "DSRequest.request_body.request_type", 2);
    // group_id claims 5 bytes, 1 present
    expectError(
      () => decodeDSRequest(Uint8Array.of(0, 1, 11, 5, 0xaa)),
      "truncated",
      "DSRequest.request_body.external_commit_info_request.group_id",
      4,
    );
  });
});

describe("trailing bytes", () => {
  test("after a DSRequest", () => {
    const full = encodeDSRequest(addClientsRequest());
    expectError(() => decodeDSRequest(cat(full, [0])), "trailing_bytes", "DSRequest", full.length);
  });
  test("after a DSResponse and an MLSMessage", () => {
    const ok = encodeDSResponse({ protocolVersion: 1, responseBody: { responseType: "ok" } });
    expectError(() => decodeDSResponse(cat(ok, [1, 2])), "trailing_bytes", "DSResponse", 3);
    const m = encodeMLSMessage(F.commit);
    expectError(() => decodeMLSMessage(cat(m, [0])), "trailing_bytes", "MLSMessage", m.length);
  });
});

describe("oversized", () => {
  test("a vector longer than maxVectorLength", () => {
    const bytes = Uint8Array.of(0, 1, 11, 0x40, 100, ...new Array<number>(100).fill(0), 0);
    expect(decodeDSRequest(bytes).requestBody.requestType).toBe("external_commit_info");
    expectError(
      () => decodeDSRequest(bytes, { maxVectorLength: 99 }),
      "oversized",
      "DSRequest.request_body.external_commit_info_request.group_id",
      3,
    );
  });
  test("a message larger than maxMessageSize", () => {
    const full = encodeDSRequest(addClientsRequest());
    expectError(() => decodeDSRequest(full, { maxMessageSize: full.length - 1 }), "oversized", "DSRequest", 0);
  });
  test("a vector header larger than the input is truncation, not an allocation", () => {
    // 4-byte varint claiming 2^30-1 bytes
    expectError(
      () => decodeDSRequest(Uint8Array.of(0, 1, 11, 0xbf, 0xff, 0xff, 0xff), { maxVectorLength: 2 ** 30 }),
      "truncated",
      "DSRequest.request_body.external_commit_info_request.group_id",
    );
  });
});

describe("unknown enum values", () => {
  test("DSRequestType 13", () => {
    expectError(() => decodeDSRequest(Uint8Array.of(0, 1, 13, 0)), "unknown_enum", "DSRequest.request_body.request_type", 2);
  });
  test("DSAuthType 4", () => {
    expectError(() => decodeDSRequest(Uint8Array.of(0, 1, 8, 4)), "unknown_enum", "DSRequest.authentication_data.auth_type", 3);
  });
  test("DSResponseType 6 and DSFanoutResponseType 2", () => {
    expectError(() => decodeDSResponse(Uint8Array.of(0, 1, 6)), "unknown_enum", "DSResponse.response_body.response_type", 2);
    expectError(
      () => decodeDSFanoutResponse(Uint8Array.of(0, 1, 2)),
      "unknown_enum",
      "DSFanoutResponse.response_body.response_type",
      2,
    );
  });
});

describe("malformed", () => {
  test("non-minimal varint", () => {
    expectError(
      () => decodeDSRequest(Uint8Array.of(0, 1, 11, 0x40, 0x01, 0xaa, 0)),
      "malformed",
      "DSRequest.request_body.external_commit_info_request.group_id",
      3,
    );
    expectError(
      () => decodeDSRequest(Uint8Array.of(0, 1, 11, 0x80, 0, 0, 1, 0xaa, 0)),
      "malformed",
      "DSRequest.request_body.external_commit_info_request.group_id",
      3,
    );
  });

  test("varint with the 0b11 prefix", () => {
    expectError(
      () => decodeDSRequest(Uint8Array.of(0, 1, 11, 0xc0, 0, 0, 0, 0, 0, 0, 1, 0xaa, 0)),
      "malformed",
      "DSRequest.request_body.external_commit_info_request.group_id",
    );
  });

  test("bad optional presence byte", () => {
    const good = encodeDSRequest({
      version: 1,
      requestBody: {
        requestType: "update_client",
        updateClientRequest: { groupUpdate: { commit: F.commit, partialGroupInfo: { groupInfoExtensions: [], signature: Uint8Array.of() } } },
      },
      authenticationData: { authType: "anonymous" },
    });
    const bad = Uint8Array.from(good);
    const at = bad.length - 2; // token presence byte, then auth_type
    expect(bad[at]).toBe(0);
    bad[at] = 2;
    expectError(() => decodeDSRequest(bad), "malformed", "DSRequest.request_body.update_client_request.token", at);
    const err = cat(encodeDSResponse({ protocolVersion: 1, responseBody: { responseType: "error", error: { code: 9, message: "" } } }));
    err[err.length - 1] = 7;
    expectError(() => decodeDSResponse(err), "malformed", "DSResponse.response_body.error.current_epoch");
  });

  test("a bad element names its index", () => {
    const full = encodeDSRequest(addClientsRequest());
    const w = encodeMLSMessage(F.welcome);
    const second = Buffer.from(full).lastIndexOf(Buffer.from(w));
    const bad = Uint8Array.from(full);
    bad[second + 3] = 0x77; // wire_format of welcome_messages[1]
    const e = expectError(
      () => decodeDSRequest(bad),
      "malformed",
      "DSRequest.request_body.add_clients_request.welcome_messages[1]",
      second,
    );
    expect(e.message).toMatch(/MLSMessage/);
  });

  test("an element overrunning its vector", () => {
    // key_packages request: client_identifiers<V> of 2 bytes whose element claims 5
    expectError(
      () => decodeDSRequest(Uint8Array.of(0, 1, 7, 2, 5, 0x61, 0, 0)),
      "malformed",
      "DSRequest.request_body.key_packages_request.client_identifiers[0]",
    );
  });

  test("invalid UTF-8 in a text field", () => {
    const bytes = Uint8Array.of(0, 1, 1, 0, 9, 2, 0xc3, 0x28, 0);
    expectError(() => decodeDSResponse(bytes), "malformed", "DSResponse.response_body.error.message", 5);
  });

  test("MLS structs must be canonical even where ts-mls is lax", () => {
    const v = (JSON.parse(readFileSync("/work/shared/vectors/messages.json", "utf8")) as Record<string, string>[])[0]!;
    // ExternalInit { opaque kem_output<V> } with a non-minimal two-byte length
    const ei = hex(v.external_init_proposal!);
    expect(ei[0]! < 0x40).toBe(true);
    const nonMinimal = cat([0x40, ei[0]!], ei.subarray(1));
    expectError(() => decodeWith(externalInitCodec, nonMinimal, "ExternalInit"), "malformed", "ExternalInit", 0);
    // GroupSecrets: optional<opaque> path_secret with presence byte 2
    const gs = hex(v.group_secrets!);
    const js = gs[0]!; // joiner_secret length (one-byte varint)
    const presenceAt = 1 + js;
    expect([0, 1]).toContain(gs[presenceAt]);
    if (gs[presenceAt] === 0) {
      const bad = Uint8Array.from(gs);
      bad[presenceAt] = 2;
      expectError(() => decodeWith(groupSecretsCodec, bad, "GroupSecrets"), "malformed", "GroupSecrets", 0);
    }
  });

  test("garbage where an MLSMessage should be", () => {
    expectError(() => decodeMLSMessage(Uint8Array.of(0, 1, 0, 9, 1, 2, 3)), "malformed", "MLSMessage", 0);
    expectError(
      () => decodeDSFanoutRequest(Uint8Array.of(0, 1, 1, 0x61, 0, 0, 0, 1, 0, 9)),
      "malformed",
      "DSFanoutRequest.mls_message",
      6,
    );
  });

  test("extension helpers reject bad extension_data", () => {
    expect(() => readFanoutAuthToken([{ extensionType: 0xf0a1, extensionData: Uint8Array.of(5, 1) }])).toThrow(WireDecodeError);
    expect(() => isLastResort([{ extensionType: 0xf0a4, extensionData: Uint8Array.of(1) }])).toThrow(/empty/);
    expect(() => decodeExternalSenders(Uint8Array.of(3, 1, 2))).toThrow(WireDecodeError);
  });
});
