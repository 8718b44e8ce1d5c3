// The one request-size limit: a DSRequest over `maxRequestBytes` is answered
// with the DS error too_large (RPC ResourceExhausted, DSErrorDetail attached)
// on every protocol, whether the size shows in a Content-Length, a gRPC frame
// header or only in the bytes; one at the limit reaches the handler intact.
// And the SDK's transport survives an oversized request: the next call on the
// same DSTransport works (it used to fail for good with ENHANCE_YOUR_CALM).
import http2 from "node:http2";
import { request as httpsRequest } from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { fromBinary } from "@bufbuild/protobuf";
import { DSErrorDetailSchema, HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createDSTransport, DSClient, DSRequestError, type RpcProtocol } from "../../src/client/index.js";
import { DSErrorCode, decodeDSResponse } from "../../src/wire/index.js";
import { minMaxRequestBytes } from "../../src/server/limits.js";
import { ConfigError, parseServeArgs } from "../../src/cli/config.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";
import { prng } from "../helpers/prng.js";
import { createConnectTransport } from "@connectrpc/connect-node";

const limit = minMaxRequestBytes; // 64 KiB: small, so that many sizes are cheap
let ca: DevCa;
let server: TestServer;
const handler = recordingHandler((bytes) => ({ response: Uint8Array.of(bytes.length & 0xff) }));

beforeAll(async () => {
  ca = await makeDevCa(["localhost"]);
  server = await startTestServer(ca, "localhost", handler, { maxRequestBytes: limit });
});
afterAll(async () => {
  await server?.close();
  await ca?.cleanup();
});

function expectTooLarge(err: unknown): void {
  expect(err).toBeInstanceOf(ConnectError);
  const ce = err as ConnectError;
  expect(ce.code).toBe(Code.ResourceExhausted);
  const ds = DSRequestError.fromConnectError(ce);
  expect(ds?.code).toBe(DSErrorCode.too_large);
  expect(ds?.dsMessage).toMatch(/exceeds this DS's limit of 65536 bytes/);
}

const protocols: { name: string; protocol: RpcProtocol; json?: boolean }[] = [
  { name: "grpc", protocol: "grpc" },
  { name: "connect (binary)", protocol: "connect" },
  { name: "connect (JSON)", protocol: "connect", json: true },
  { name: "grpc-web", protocol: "grpc-web" },
];

describe("request-size limit", () => {
  it.each(protocols)("$name: random sizes around the limit: at most the limit reaches the handler, more is too_large", async ({ protocol, json }) => {
    const seed = 0x5eed + protocol.length + (json === true ? 1 : 0);
    const rand = prng(seed);
    const t =
      json === true
        ? createConnectTransport({ baseUrl: server.url, httpVersion: "2", useBinaryFormat: false, nodeOptions: { ca: ca.ca } })
        : createDSTransport({ baseUrl: server.url, ca: ca.ca, protocol });
    const hub = createClient(HubService, t);
    const sizes = [limit, limit + 1, 0, ...Array.from({ length: 10 }, () => limit - 200 + Math.floor(rand() * 400))];
    for (const size of sizes) {
      const before = handler.calls.length;
      const body = new Uint8Array(size).fill(size & 0xff);
      const res = await hub.submit({ dsRequest: body }).then(
        (r) => ({ ok: r.dsResponse }),
        (e: unknown) => ({ err: e }),
      );
      if (size <= limit) {
        expect("ok" in res, `seed ${seed}, size ${size}`).toBe(true);
        expect(handler.calls.length).toBe(before + 1);
        expect(handler.calls.at(-1)!.bytes).toEqual(body);
      } else {
        expectTooLarge((res as { err: unknown }).err);
        expect(handler.calls.length, `seed ${seed}, size ${size}: the handler must not see it`).toBe(before);
      }
    }
    if ("close" in t) (t as { close(): void }).close();
  });

  it("a gRPC frame header declaring 1 GiB is answered at once, before any payload", async () => {
    const session = http2.connect(server.url, { ca: ca.ca });
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/mimi.ds.v1.HubService/Submit",
        "content-type": "application/grpc",
        te: "trailers",
      });
      const header = Buffer.alloc(5);
      header.writeUInt32BE(1024 * 1024 * 1024, 1);
      stream.write(header); // and nothing else: the server must not wait for the gigabyte
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        stream.on("trailers", resolve);
        stream.on("response", (h) => {
          if (h["grpc-status"] !== undefined) resolve(h); // trailers-only answer
        });
        stream.on("error", reject);
        stream.resume();
      });
      expect(trailers["grpc-status"]).toBe(String(Code.ResourceExhausted));
      const details = Buffer.from(String(trailers["grpc-status-details-bin"]), "base64");
      // google.rpc.Status { code = 1; message = 2; details = 3 (Any) }: the Any holds our DSErrorDetail.
      expect(details.includes(Buffer.from("mimi.ds.v1.DSErrorDetail"))).toBe(true);
      stream.close();
    } finally {
      session.close();
    }
  });

  it("an HTTP/1.1 Connect call with a huge Content-Length is answered too_large in JSON, with the DS error", async () => {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpsRequest(
        `${server.url}/mimi.ds.v1.HubService/Submit`,
        { method: "POST", ca: ca.ca, headers: { "content-type": "application/proto", "content-length": String(1 << 30) } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (text += d));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on("error", reject);
      req.write(Buffer.alloc(16)); // a few bytes of the promised gigabyte
    });
    expect(status).toBe(429); // Connect's HTTP status for resource_exhausted
    const json = JSON.parse(body) as { code: string; details: { type: string; value: string }[] };
    expect(json.code).toBe("resource_exhausted");
    const detail = json.details.find((d) => d.type === "mimi.ds.v1.DSErrorDetail");
    expect(detail).toBeDefined();
    const ds = decodeDSResponse(fromBinary(DSErrorDetailSchema, Buffer.from(detail!.value, "base64")).dsResponse);
    expect(ds.responseBody.responseType === "error" && ds.responseBody.error.code).toBe(DSErrorCode.too_large);
  });
});

describe("--max-request-bytes", () => {
  it("--max-request-bytes takes bytes or KiB/MiB within 64 KiB .. 16 MiB", () => {
    const base = ["--domain", "d.example", "--tls-cert", "c", "--tls-key", "k"];
    expect(parseServeArgs(base, {}).maxRequestBytes).toBe(16 * 1024 * 1024);
    expect(parseServeArgs([...base, "--max-request-bytes", "8MiB"], {}).maxRequestBytes).toBe(8 * 1024 * 1024);
    expect(parseServeArgs([...base, "--max-request-bytes", "100000"], {}).maxRequestBytes).toBe(100000);
    expect(parseServeArgs(base, { MIMI_DS_MAX_REQUEST_BYTES: "512KiB" }).maxRequestBytes).toBe(512 * 1024);
    for (const bad of ["17MiB", "1KiB", "8 MB", "-5", "lots"]) {
      expect(() => parseServeArgs([...base, "--max-request-bytes", bad], {}), bad).toThrow(ConfigError);
    }
  });
});

describe("the SDK transport after an oversized request", () => {
  // 10.5 MiB: the size that used to poison the connection for good.
  const big = Math.round(10.5 * 1024 * 1024);

  it.each(["grpc", "connect", "grpc-web"] as const)("%s: too_large, then the next calls on the same transport work", async (protocol) => {
    const t = createDSTransport({ baseUrl: server.url, ca: ca.ca, protocol });
    const ds = new DSClient(t);
    try {
      expect(await ds.ping()).toBe("localhost");
      const answer = decodeDSResponse(await ds.submit(new Uint8Array(big)));
      expect(answer.responseBody.responseType === "error" && answer.responseBody.error.code).toBe(DSErrorCode.too_large);
      expect(await ds.ping({ timeoutMs: 10_000 })).toBe("localhost");
      expect(await ds.submit(Uint8Array.of(1, 2, 3))).toEqual(Uint8Array.of(3));
    } finally {
      t.close();
    }
  });

  it("with Node's default 10 MB session budget the refused connection is retired and the next call reconnects", async () => {
    const t = createDSTransport({ baseUrl: server.url, ca: ca.ca, protocol: "grpc", maxSessionMemoryMb: 10 });
    const ds = new DSClient(t);
    try {
      expect(await ds.ping()).toBe("localhost");
      // Node usually refuses the stream itself (ENHANCE_YOUR_CALM: an Internal
      // ConnectError); if the server's answer wins the race, it is too_large.
      const outcome = await ds.submit(new Uint8Array(big)).then(
        (bytes) => decodeDSResponse(bytes),
        (e: unknown) => e,
      );
      if (outcome instanceof ConnectError) expect(outcome.code).toBe(Code.Internal);
      else expect((outcome as { responseBody: { error?: { code: number } } }).responseBody.error?.code).toBe(DSErrorCode.too_large);
      for (let i = 0; i < 3; i++) expect(await ds.ping({ timeoutMs: 10_000 })).toBe("localhost");
    } finally {
      t.close();
    }
  });
});
