// HubService over every protocol and client: Ping, Submit envelopes, DS error
// mapping with DSErrorDetail, size limits, client-certificate domains, logs.
import { X509Certificate } from "node:crypto";
import { DSRequestError } from "../../src/client/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { DSErrorDetailSchema, HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createDeliveryService } from "../../src/ds/service.js";
import { openStore } from "../../src/store/index.js";
import type { Store } from "../../src/store/port.js";
import {
  decodeDSResponse,
  DSErrorCode,
  dsErrorResponse,
  dsErrorStatusName,
  dsOkResponse,
  encodeDSRequest,
  encodeDSResponse,
} from "../../src/wire/index.js";
import { client, grpcJsClient, grpcJsUnary, transportKinds, type ClientTls } from "../helpers/clients.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";

let ca: DevCa;
let otherCa: DevCa;
let tls: ClientTls;

beforeAll(async () => {
  ca = await makeDevCa(["hub.example", "peer.example"]);
  otherCa = await makeDevCa(["peer.example"]);
  tls = { ca: ca.ca };
});
afterAll(async () => {
  await ca.cleanup();
  await otherCa.cleanup();
});

function detailResponse(err: ConnectError) {
  const [detail] = err.findDetails(DSErrorDetailSchema);
  expect(detail).toBeDefined();
  return decodeDSResponse(detail!.dsResponse);
}

describe("HubService with the dispatcher", () => {
  let server: TestServer;
  let store: Store;
  beforeAll(async () => {
    store = await openStore("sqlite::memory:");
    const ds = await createDeliveryService({ domain: "hub.example", store });
    server = await startTestServer(ca, "hub.example", ds.handler, { hubInfo: ds.hubInfo });
  });
  afterAll(async () => {
    await server.close();
    await store.close();
  });

  it.each(transportKinds)("answers Ping over %s", async (kind) => {
    const hub = client(HubService, kind, server.url, tls);
    expect((await hub.ping({})).domain).toBe("hub.example");
  });

  it("answers Ping to @grpc/grpc-js", async () => {
    const c = grpcJsClient(HubService, server.port, tls);
    try {
      const res = await grpcJsUnary<{ domain: string }>(c, "Ping", {});
      expect(res.domain).toBe("hub.example");
    } finally {
      c.close();
    }
  });

  it.each(transportKinds)("maps garbage to InvalidArgument with a decodable DSErrorDetail over %s", async (kind) => {
    const hub = client(HubService, kind, server.url, tls);
    const err = await hub.submit({ dsRequest: new Uint8Array([0, 1, 0xff, 0xff, 0xff]) }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.InvalidArgument);
    const res = detailResponse(err!);
    expect(res.responseBody.responseType).toBe("error");
    if (res.responseBody.responseType === "error") expect(res.responseBody.error.code).toBe(DSErrorCode.decode_error);
  });

  it("refuses another protocol version with unsupported_version", async () => {
    const hub = client(HubService, "grpc", server.url, tls);
    const bytes = encodeDSRequest({
      version: 1,
      requestBody: { requestType: "request_group_id", requestGroupIdRequest: {} },
      authenticationData: { authType: "anonymous" },
    });
    bytes[1] = 2; // version 2
    const err = await hub.submit({ dsRequest: bytes }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    const res = detailResponse(err as ConnectError);
    if (res.responseBody.responseType !== "error") throw new Error("expected an error response");
    expect(res.responseBody.error.code).toBe(DSErrorCode.unsupported_version);
  });

  it("rejects a request larger than the limit (16 MiB by default) with ResourceExhausted and too_large", async () => {
    const hub = client(HubService, "grpc", server.url, tls);
    const err = await hub
      .submit({ dsRequest: new Uint8Array(16 * 1024 * 1024 + 1) })
      .catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    expect(DSRequestError.fromConnectError(err as ConnectError)?.codeName).toBe("too_large");
  });

  it("logs one line per RPC without payloads", async () => {
    const hub = client(HubService, "connect", server.url, tls);
    await hub.ping({});
    const line = server.logs.find((l) => l.msg === "rpc" && l.method === "Ping");
    expect(line).toMatchObject({ service: "mimi.ds.v1.HubService", method: "Ping", code: "ok", level: 30 });
    expect(typeof line?.ms).toBe("number");
    expect(line?.peer).toBe("127.0.0.1");
    const submitLine = server.logs.find((l) => l.msg === "rpc" && l.method === "Submit");
    expect(submitLine?.code).toBe("invalid_argument");
    expect(JSON.stringify(server.logs)).not.toContain("ds_request");
  });
});

describe("HubService envelope and error mapping", () => {
  const ok = encodeDSResponse(dsOkResponse());
  const handler = recordingHandler((bytes) => {
    // First byte selects an error code (0 = success) for this test.
    const code = bytes[0] ?? 0;
    if (code === 0) return { response: ok };
    if (code === 0xee) throw new Error("secret internal detail");
    const message = `error ${code}`;
    return { response: encodeDSResponse(dsErrorResponse(code, message)), error: { code, message } };
  });
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer(ca, "hub.example", handler);
  });
  afterAll(() => server.close());

  it.each(transportKinds)("hands the bytes over and returns the DSResponse over %s", async (kind) => {
    const hub = client(HubService, kind, server.url, tls);
    const sent = new Uint8Array([0, 1, 2, 3, 250]);
    const res = await hub.submit({ dsRequest: sent });
    expect(res.dsResponse).toEqual(ok);
    expect(decodeDSResponse(res.dsResponse).responseBody.responseType).toBe("ok");
    expect(handler.calls.at(-1)?.bytes).toEqual(sent);
  });

  it("maps every DS error code to its RPC status", async () => {
    const hub = client(HubService, "grpc", server.url, tls);
    for (const [name, code] of Object.entries(DSErrorCode)) {
      const err = await hub.submit({ dsRequest: new Uint8Array([code]) }).catch((e: unknown) => ConnectError.from(e));
      expect(err, name).toBeInstanceOf(ConnectError);
      expect(Code[(err as ConnectError).code], name).toBe(dsErrorStatusName(code));
      expect((err as ConnectError).rawMessage).toBe(`error ${code}`);
      const res = detailResponse(err as ConnectError);
      if (res.responseBody.responseType !== "error") throw new Error("expected an error response");
      expect(res.responseBody.error.code).toBe(code);
    }
  });

  it("reports the DS error status to grpc-js with the detail in grpc-status-details-bin", async () => {
    const c = grpcJsClient(HubService, server.port, tls);
    try {
      const err = await grpcJsUnary(c, "Submit", { dsRequest: new Uint8Array([DSErrorCode.wrong_epoch]) }).catch(
        (e: { code: number; metadata: { get(k: string): unknown[] } }) => e,
      );
      expect((err as { code: number }).code).toBe(Code.FailedPrecondition);
      expect((err as { metadata: { get(k: string): unknown[] } }).metadata.get("grpc-status-details-bin")).toHaveLength(1);
    } finally {
      c.close();
    }
  });

  it("answers handler failures as Internal without their message", async () => {
    const hub = client(HubService, "connect", server.url, tls);
    const err = await hub.submit({ dsRequest: new Uint8Array([0xee]) }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.Internal);
    expect((err as ConnectError).rawMessage).not.toContain("secret");
  });

  it("passes the verified client-certificate domain, and only a verified one", async () => {
    const peer = ca.domain("peer.example");
    const stranger = otherCa.domain("peer.example");
    const cases: { tls: ClientTls; expected: string | undefined }[] = [
      { tls: { ca: ca.ca, cert: peer.cert, key: peer.key }, expected: "peer.example" },
      { tls: { ca: ca.ca }, expected: undefined },
      { tls: { ca: ca.ca, cert: stranger.cert, key: stranger.key }, expected: undefined },
    ];
    for (const kind of transportKinds) {
      for (const c of cases) {
        const hub = client(HubService, kind, server.url, c.tls);
        await hub.submit({ dsRequest: new Uint8Array([0]) });
        const ctx = handler.calls.at(-1)!.ctx;
        expect(ctx.peerDomain, `${kind} ${c.expected}`).toBe(c.expected);
        expect(ctx.remoteAddress).toBe("127.0.0.1");
      }
    }
    // And for grpc-js.
    const g = grpcJsClient(HubService, server.port, { ca: ca.ca, cert: peer.cert, key: peer.key });
    try {
      await grpcJsUnary(g, "Submit", { dsRequest: new Uint8Array([0]) });
      expect(handler.calls.at(-1)!.ctx.peerDomain).toBe("peer.example");
    } finally {
      g.close();
    }
    const line = server.logs.findLast((l) => l.msg === "rpc" && l.method === "Submit");
    expect(line?.peer).toBe("peer.example");
  });

  it("names a domain only when its certificate comes from the CA configured for that domain", async () => {
    // Both CAs are trusted for TLS, but otherCa vouches only for other.example:
    // its certificate for peer.example must not speak for peer.example.
    const der = (pem: Buffer) => new X509Certificate(pem).raw;
    const trustServer = await startTestServer(ca, "hub.example", handler, {
      tls: { cert: ca.domain("hub.example").cert, key: ca.domain("hub.example").key, ca: [ca.ca, otherCa.ca] },
      domainTrust: (d) => (d === "peer.example" ? [der(ca.ca)] : d === "other.example" ? [der(otherCa.ca)] : []),
    });
    try {
      const posing = otherCa.domain("peer.example");
      const genuine = ca.domain("peer.example");
      for (const [cert, expected] of [[posing, undefined], [genuine, "peer.example"]] as const) {
        const hub = client(HubService, "grpc", trustServer.url, { ca: ca.ca, cert: cert.cert, key: cert.key });
        await hub.submit({ dsRequest: new Uint8Array([0]) });
        expect(handler.calls.at(-1)!.ctx.peerDomain).toBe(expected);
      }
    } finally {
      await trustServer.close();
    }
  });
});
