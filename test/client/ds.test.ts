import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { DSErrorDetailSchema } from "../../gen/mimi/ds/v1/hub_pb.js";
import {
  DSErrorCode,
  decodeDSRequest,
  dsErrorResponse,
  dsErrorStatusName,
  encodeDSResponse,
  DS_PROTOCOL_VERSION,
} from "../../src/wire/index.js";
import {
  DSClient,
  DSRequestError,
  UnexpectedResponseError,
  createDSTransport,
  type DSTransport,
  type RpcProtocol,
} from "../../src/client/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";

function withDetail(code: number, message: string, epoch?: bigint): ConnectError {
  const response = encodeDSResponse(dsErrorResponse(code, message, epoch));
  return new ConnectError(message, Code[dsErrorStatusName(code)], undefined, [
    { desc: DSErrorDetailSchema, value: { dsResponse: response } },
  ]);
}

describe("DSRequestError.fromConnectError", () => {
  it("decodes the DSErrorDetail (code, name, text, current epoch, RPC status)", () => {
    const e = DSRequestError.fromConnectError(withDetail(DSErrorCode.wrong_epoch, "stale commit", 12n));
    expect(e).toBeInstanceOf(DSRequestError);
    expect(e!.code).toBe(9);
    expect(e!.codeName).toBe("wrong_epoch");
    expect(e!.dsMessage).toBe("stale commit");
    expect(e!.currentEpoch).toBe(12n);
    expect(e!.rpcCode).toBe(Code.FailedPrecondition);
    expect(e!.message).toContain("wrong_epoch");
  });

  it("keeps unknown codes", () => {
    const e = DSRequestError.fromConnectError(withDetail(999, "future"));
    expect(e!.codeName).toBe("unknown(999)");
    expect(e!.currentEpoch).toBeUndefined();
  });

  it("gives undefined without a detail, and refuses a broken one", () => {
    expect(DSRequestError.fromConnectError(new ConnectError("down", Code.Unavailable))).toBeUndefined();
    const broken = new ConnectError("x", Code.Internal, undefined, [
      { desc: DSErrorDetailSchema, value: { dsResponse: Uint8Array.of(0, 1, 9) } },
    ]);
    expect(() => DSRequestError.fromConnectError(broken)).toThrow(UnexpectedResponseError);
  });
});

describe("DSClient over TLS", () => {
  let ca: DevCa;
  let server: TestServer;
  const groupId = Uint8Array.of(0xaa, 0xbb);
  const handler = recordingHandler((bytes) => {
    let req;
    try {
      req = decodeDSRequest(bytes);
    } catch {
      const message = "undecodable";
      return {
        response: encodeDSResponse(dsErrorResponse(DSErrorCode.decode_error, message)),
        error: { code: DSErrorCode.decode_error, message },
      };
    }
    if (req.requestBody.requestType === "request_group_id") {
      return {
        response: encodeDSResponse({
          protocolVersion: DS_PROTOCOL_VERSION,
          responseBody: { responseType: "group_id", groupId },
        }),
      };
    }
    if (req.requestBody.requestType === "external_commit_info") {
      return { response: encodeDSResponse({ protocolVersion: 1, responseBody: { responseType: "ok" } }) };
    }
    const message = "group not found";
    return {
      response: encodeDSResponse(dsErrorResponse(DSErrorCode.unknown_group, message)),
      error: { code: DSErrorCode.unknown_group, message },
    };
  });

  beforeAll(async () => {
    ca = await makeDevCa(["hub.example"]);
    server = await startTestServer(ca, "hub.example", handler);
  });
  afterAll(async () => {
    await server?.close();
    await ca?.cleanup();
  });

  for (const protocol of ["grpc", "connect", "grpc-web"] as RpcProtocol[]) {
    it(`${protocol}: ping, typed answers and DS errors`, async () => {
      const transport: DSTransport = createDSTransport({ baseUrl: server.url, ca: ca.ca, protocol });
      try {
        const ds = new DSClient(transport);
        expect(await ds.ping()).toBe("hub.example");
        expect(await ds.requestGroupId()).toEqual(groupId);
        const sent = decodeDSRequest(handler.calls.at(-1)!.bytes);
        expect(sent.requestBody.requestType).toBe("request_group_id");
        expect(sent.authenticationData.authType).toBe("anonymous");

        const err = await ds.externalCommitInfo(Uint8Array.of(1)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(UnexpectedResponseError);

        const refused = await ds.keyPackages(["bob:1@hub.example"]).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(DSRequestError);
        expect((refused as DSRequestError).codeName).toBe("unknown_group");
        expect((refused as DSRequestError).rpcCode).toBe(Code.NotFound);

        // Raw access: the DSResponse bytes of the error, from the RPC's detail.
        const raw = await ds.submit(Uint8Array.of(0, 1, 0xff));
        expect(raw).toEqual(encodeDSResponse(dsErrorResponse(DSErrorCode.decode_error, "undecodable")));
      } finally {
        transport.close();
      }
    });
  }

  it("mutual TLS: presents the client certificate", async () => {
    const peer = ca.domain("hub.example");
    const transport = createDSTransport({ baseUrl: server.url, ca: ca.ca, cert: peer.cert, key: peer.key });
    try {
      await new DSClient(transport).requestGroupId();
      expect(handler.calls.at(-1)!.ctx.peerDomain).toBe("hub.example");
    } finally {
      transport.close();
    }
  });

  it("rejects a server its CA did not sign", async () => {
    const other = await makeDevCa(["hub.example"]);
    const transport = createDSTransport({ baseUrl: server.url, ca: other.ca });
    try {
      const err = await new DSClient(transport).ping().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect(err).not.toBeInstanceOf(DSRequestError);
    } finally {
      transport.close();
      await other.cleanup();
    }
  });
});
