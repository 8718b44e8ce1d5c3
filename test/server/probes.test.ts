// GET /healthz and /readyz on the DS's TLS port, in process: readiness follows
// what the composition root reports (the store) and turns 503 once the server
// drains; only GET and HEAD of the exact paths are probes, anything else stays
// an RPC path.
import http2 from "node:http2";
import { request } from "node:https";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ReadyState } from "../../src/server/probes.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";

let ca: DevCa;
beforeAll(async () => {
  ca = await makeDevCa(["a.example"]);
});
afterAll(() => ca?.cleanup());

function get(server: TestServer, path: string, options: { method?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { ca: ca.ca, method: options.method ?? "GET" }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("probes on the TLS port", () => {
  it("readiness follows the given state; liveness does not", async () => {
    let state: ReadyState | Error = { ready: true };
    const server = await startTestServer(ca, "a.example", recordingHandler(), {
      readiness: () => {
        if (state instanceof Error) throw state;
        return state;
      },
    });
    try {
      expect(await get(server, "/readyz")).toEqual({ status: 200, body: "ready\n" });
      state = { ready: false, reason: "store: no answer within 2000 ms" };
      expect(await get(server, "/readyz")).toEqual({ status: 503, body: "not ready: store: no answer within 2000 ms\n" });
      expect(await get(server, "/healthz")).toEqual({ status: 200, body: "ok\n" });
      expect(await get(server, "/readyz", { method: "HEAD" })).toEqual({ status: 503, body: "" });
      // A readiness check that throws is not ready, not a crash.
      state = new Error("boom");
      expect(await get(server, "/readyz?x=1")).toEqual({ status: 503, body: "not ready: boom\n" });
      // Not probes: other methods and paths go to the RPC router.
      expect((await get(server, "/readyz", { method: "POST" })).status).not.toBe(200);
      expect((await get(server, "/readyz/x")).status).not.toBe(200);

      // Over HTTP/2 as well.
      const session = http2.connect(server.url, { ca: ca.ca });
      try {
        const status = await new Promise<number>((resolve, reject) => {
          const s = session.request({ ":path": "/healthz" });
          s.on("response", (h) => resolve(Number(h[":status"])));
          s.on("error", reject);
          s.resume();
          s.end();
        });
        expect(status).toBe(200);
      } finally {
        session.close();
      }
    } finally {
      await server.close();
    }
  });

  it("answers 503 draining once close() has begun", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const server = await startTestServer(
      ca,
      "a.example",
      recordingHandler(async (bytes) => {
        await held;
        return { response: bytes };
      }),
      { drainTimeoutMs: 5_000 },
    );
    const session = http2.connect(server.url, { ca: ca.ca });
    // An HTTP/1.1 connection with a request half sent: not idle, so close() keeps it
    // while it drains; the rest of the request arrives once draining has begun.
    const socket = tlsConnect({ host: "127.0.0.1", port: server.port, servername: "localhost", ca: ca.ca, ALPNProtocols: ["http/1.1"] });
    let answer = "";
    socket.on("data", (d) => (answer += d));
    try {
      await new Promise<void>((r, j) => socket.once("secureConnect", () => r()).once("error", j));
      socket.write("GET /readyz HTTP/1.1\r\nHost: localhost\r\n");
      // A call in flight keeps the server draining.
      const call = session.request({ ":path": "/mimi.ds.v1.HubService/Submit", ":method": "POST", "content-type": "application/proto" });
      call.on("error", () => undefined);
      call.resume();
      call.end(Buffer.from([0x0a, 0x01, 0x00]));
      await new Promise((r) => setTimeout(r, 300));
      const closing = server.close();
      await new Promise((r) => setTimeout(r, 100));
      socket.write("\r\n");
      for (let i = 0; i < 100 && !answer.includes("draining"); i++) await new Promise((r) => setTimeout(r, 20));
      expect(answer).toMatch(/^HTTP\/1\.1 503 /);
      expect(answer).toContain("not ready: draining\n");
      release();
      await closing;
    } finally {
      release();
      socket.destroy();
      session.destroy();
      await server.close();
    }
  });
});
