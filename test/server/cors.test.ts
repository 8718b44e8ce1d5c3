// CORS as a browser sees it, checked at the HTTP level: preflights from
// configured origins get connect-es's header lists, others a 403 with a
// sentence; actual calls from allowed origins carry Allow-Origin and the
// exposed gRPC-Web status headers; without configured origins nothing changes.
// (test/browser/ drives a real Chromium against a real serve process.)
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cors as connectCors } from "@connectrpc/connect";
import { CorsConfigError, parseCorsOrigin } from "../../src/server/cors.js";
import { ConfigError, parseServeArgs } from "../../src/cli/config.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";

const app = "https://app.example";
let ca: DevCa;
let withCors: TestServer;
let withoutCors: TestServer;

beforeAll(async () => {
  ca = await makeDevCa(["localhost"]);
  withCors = await startTestServer(ca, "localhost", recordingHandler(), { corsOrigins: [app, "http://127.0.0.1:3000"] });
  withoutCors = await startTestServer(ca, "localhost", recordingHandler());
});
afterAll(async () => {
  await withCors?.close();
  await withoutCors?.close();
  await ca?.cleanup();
});

interface Answer {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  readonly body: string;
}

async function call(url: string, headers: http2.OutgoingHttpHeaders, body?: Uint8Array): Promise<Answer> {
  const session = http2.connect(url, { ca: ca.ca });
  try {
    return await new Promise<Answer>((resolve, reject) => {
      const stream = session.request(headers);
      let status = 0;
      let response: http2.IncomingHttpHeaders = {};
      let text = "";
      stream.on("response", (h) => {
        status = Number(h[":status"]);
        response = h;
      });
      stream.setEncoding("latin1");
      stream.on("data", (d: string) => (text += d));
      stream.on("end", () => resolve({ status, headers: response, body: text }));
      stream.on("error", reject);
      stream.end(body);
    });
  } finally {
    session.close();
  }
}

const preflight = (origin: string) => ({
  ":method": "OPTIONS",
  ":path": "/mimi.ds.v1.HubService/Submit",
  origin,
  "access-control-request-method": "POST",
  "access-control-request-headers": "content-type,connect-protocol-version,x-grpc-web,x-user-agent",
});

const lower = (xs: readonly string[]) => xs.map((x) => x.toLowerCase()).sort();
const list = (v: string | string[] | undefined) => lower(String(v ?? "").split(/,\s*/).filter((x) => x !== ""));

describe("CORS", () => {
  it("answers a preflight from a configured origin with connect-es's methods and headers", async () => {
    const res = await call(withCors.url, preflight(app));
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(app);
    expect(res.headers.vary).toBe("Origin");
    expect(list(res.headers["access-control-allow-methods"])).toEqual(lower(connectCors.allowedMethods));
    expect(list(res.headers["access-control-allow-headers"])).toEqual(lower(connectCors.allowedHeaders));
    expect(Number(res.headers["access-control-max-age"])).toBeGreaterThan(0);
  });

  it("refuses a preflight from any other origin with 403 and a sentence naming the flag", async () => {
    for (const origin of ["https://evil.example", "https://app.example:8443", "http://app.example", "null"]) {
      const res = await call(withCors.url, preflight(origin));
      expect(res.status, origin).toBe(403);
      expect(res.headers["access-control-allow-origin"]).toBeUndefined();
      expect(res.body).toContain("--cors-origin");
    }
  });

  it("refuses preflights when no origin is configured (it was a bare 405)", async () => {
    const res = await call(withoutCors.url, preflight(app));
    expect(res.status).toBe(403);
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("lets an allowed origin read answers and the gRPC-Web status headers", async () => {
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 5]), Buffer.from([0x0a, 0x03, 1, 2, 3])]);
    const res = await call(
      withCors.url,
      {
        ":method": "POST",
        ":path": "/mimi.ds.v1.HubService/Submit",
        origin: app,
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
      },
      frame,
    );
    expect(res.status).toBe(200);
    expect(res.headers["access-control-allow-origin"]).toBe(app);
    const exposed = list(res.headers["access-control-expose-headers"]);
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) expect(exposed).toContain(h);
    expect(res.body).toMatch(/grpc-status: ?0/); // the trailer frame, readable by the page
  });

  it("adds nothing for an origin not configured, nor for same-origin or non-browser calls", async () => {
    const post = (url: string, origin?: string) =>
      call(url, {
        ":method": "POST",
        ":path": "/mimi.ds.v1.HubService/Ping",
        "content-type": "application/json",
        ...(origin !== undefined ? { origin } : {}),
      }, Buffer.from("{}"));
    for (const res of [await post(withCors.url, "https://evil.example"), await post(withCors.url), await post(withoutCors.url, app)]) {
      expect(res.status).toBe(200);
      expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    }
  });
});

describe("--cors-origin", () => {
  it("takes exact origins, repeatable, or from MIMI_DS_CORS_ORIGINS", () => {
    const base = ["--domain", "d.example", "--tls-cert", "c", "--tls-key", "k"];
    expect(parseServeArgs([...base, "--cors-origin", app, "--cors-origin", "http://localhost:5173"], {}).corsOrigins).toEqual([
      app,
      "http://localhost:5173",
    ]);
    expect(parseServeArgs(base, { MIMI_DS_CORS_ORIGINS: `${app}, *` }).corsOrigins).toEqual([app, "*"]);
    expect(parseServeArgs(base, {}).corsOrigins).toEqual([]);
    for (const bad of ["app.example", "https://app.example/", "https://app.example/path", "ftp://x.example", "https://APP.example"]) {
      expect(() => parseServeArgs([...base, "--cors-origin", bad], {}), bad).toThrow(ConfigError);
    }
  });

  it("suggests the origin a browser would send", () => {
    expect(() => parseCorsOrigin("https://app.example/")).toThrow(/did you mean https:\/\/app\.example\?/);
    expect(() => parseCorsOrigin("https://app.example:443")).toThrow(CorsConfigError);
  });
});
