// Issue 13 item 8 and the TLS Low item, each probe as the issue ran it,
// against the real server over TLS (small limits so the probes are quick):
// the advertised SETTINGS_MAX_CONCURRENT_STREAMS, streaming calls piled on
// one connection, idle sessions, half-sent HTTP/1.1 headers, unfinished
// request bodies (HTTP/2 and HTTP/1.1), idle HTTP/1.1 keep-alive
// connections, and TLS 1.2 CBC/SHA-1 suites.
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckRequestSchema } from "../../gen/grpc/health/v1/health_pb.js";
import { DEFAULT_CONNECTION_LIMITS } from "../../src/server/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { closed, grpcFrame, grpcStatus, grpcStream, h1socket, h2session, sessionClosed, socketClosed } from "../helpers/h2probe.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";
import { waitFor } from "../delivery/helpers.js";
import type http2 from "node:http2";

let ca: DevCa;
/** Small limits, but a long idle timeout so that a loaded machine does not close connections mid-probe. */
let server: TestServer;
/** The idle probes' own server. */
let idleServer: TestServer;
const limits = {
  maxConcurrentStreams: 50,
  maxStreamingCallsPerSession: 3,
  idleTimeoutMs: 60_000,
  headersTimeoutMs: 500,
  requestBodyTimeoutMs: 500,
};
const IDLE_MS = 1_000;

beforeAll(async () => {
  ca = await makeDevCa(["a.example"]);
  server = await startTestServer(ca, "a.example", recordingHandler(), { limits, drainTimeoutMs: 500 });
  idleServer = await startTestServer(ca, "a.example", recordingHandler(), { limits: { idleTimeoutMs: IDLE_MS }, drainTimeoutMs: 500 });
});
afterAll(async () => {
  await server.close();
  await idleServer.close();
  await ca.cleanup();
});

const t = () => ({ ca: ca.ca });

/** The response headers of a raw stream (a refused call is trailers-only: grpc-status is in them). */
const headersOf = (s: http2.ClientHttp2Stream): Promise<http2.IncomingHttpHeaders> =>
  new Promise((resolve) => s.once("response", (h) => resolve(h)));

const watch = (session: http2.ClientHttp2Session) =>
  grpcStream(session, "/grpc.health.v1.Health/Watch", grpcFrame(HealthCheckRequestSchema, { service: "" }));

describe("HTTP/2 limits (item 8)", () => {
  it("advertises a bounded SETTINGS_MAX_CONCURRENT_STREAMS (100 by default, not 2^32-1)", async () => {
    expect(DEFAULT_CONNECTION_LIMITS.maxConcurrentStreams).toBe(100);
    const session = await h2session(server.port, t());
    try {
      expect(session.remoteSettings.maxConcurrentStreams).toBe(50);
    } finally {
      session.destroy();
    }
  });

  it("refuses streaming calls beyond the per-connection limit with ResourceExhausted; others connections are not affected", async () => {
    const session = await h2session(server.port, t());
    const other = await h2session(server.port, t());
    try {
      const streams = Array.from({ length: 6 }, () => watch(session));
      const statuses: (string | undefined)[] = Array(6).fill("open");
      streams.forEach((s, i) => {
        s.resume();
        void grpcStatus(s).then((g) => (statuses[i] = g));
      });
      await waitFor(() => statuses.filter((s) => s === "8").length === 3, 10_000, "three refused");
      expect(streams.filter((s) => !s.closed).length).toBe(3);
      expect(statuses.filter((s) => s === "open").length).toBe(3);
      // Unary calls still go through on the crowded connection, and another connection streams.
      const ping = grpcStream(session, "/mimi.ds.v1.HubService/Ping", Buffer.from([0, 0, 0, 0, 0]));
      ping.resume();
      expect((await headersOf(ping))[":status"]).toBe(200);
      const fresh = watch(other);
      expect((await headersOf(fresh))["grpc-status"]).toBeUndefined();
      expect(server.stats().refused.streamingCallsPerSession).toBeGreaterThanOrEqual(3);
    } finally {
      session.destroy();
      other.destroy();
    }
    await waitFor(() => server.stats().streamingCalls === 0, 10_000, "streams closed");
  });

  it("closes idle sessions (the issue's 1,000 idle sessions were never closed), not those with an open call", async () => {
    const busy = await h2session(idleServer.port, t());
    const open = watch(busy);
    open.resume();
    await waitFor(() => idleServer.stats().streamingCalls === 1, 10_000, "the busy session's call");
    const sessions = await Promise.all(Array.from({ length: 30 }, () => h2session(idleServer.port, t())));
    await Promise.all(sessions.map(sessionClosed));
    expect(idleServer.stats().refused.idleClosed).toBeGreaterThanOrEqual(30);
    // The session with a streaming call open outlived several idle periods.
    expect(busy.destroyed).toBe(false);
    expect(open.closed).toBe(false);
    busy.destroy();
    await waitFor(() => idleServer.stats().sessions === 0, 10_000, "sessions gone");
  });

  it("resets HTTP/2 requests whose one-message body does not arrive in time", async () => {
    const session = await h2session(server.port, t());
    try {
      // A gRPC frame header announcing 1,000 bytes, then 10 of them, and never the end.
      const streams = Array.from({ length: 40 }, () => {
        const s = grpcStream(session, "/mimi.ds.v1.HubService/Submit");
        const head = Buffer.alloc(5);
        head.writeUInt32BE(1000, 1);
        s.write(Buffer.concat([head, Buffer.alloc(10)]));
        return s;
      });
      const codes = await Promise.all(streams.map(closed));
      expect(codes.every((c) => c === 8)).toBe(true);
      expect(server.stats().refused.requestBodyTimeout).toBeGreaterThanOrEqual(40);
      await waitFor(() => server.stats().activeCalls === 0, 10_000, "calls over");
    } finally {
      session.destroy();
    }
  });
});

describe("HTTP/1.1 limits (item 8)", () => {
  it("closes connections whose headers are never finished", async () => {
    const sockets = await Promise.all(Array.from({ length: 30 }, () => h1socket(server.port, t())));
    const ends = sockets.map(socketClosed);
    for (const s of sockets) s.write("POST /mimi.ds.v1.HubService/Ping HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    const replies = await Promise.all(ends);
    // Node answers 408 Request Timeout (or just closes) once headersTimeout has passed.
    for (const r of replies) expect(r === "" || r.startsWith("HTTP/1.1 408")).toBe(true);
  });

  it("closes connections whose request body is never finished", async () => {
    const sockets = await Promise.all(Array.from({ length: 20 }, () => h1socket(server.port, t())));
    const ends = sockets.map(socketClosed);
    for (const s of sockets) {
      s.write(
        "POST /mimi.ds.v1.HubService/Submit HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/proto\r\nContent-Length: 1000\r\n\r\n" +
          "x".repeat(10),
      );
    }
    const replies = await Promise.all(ends);
    for (const r of replies) expect(r === "" || r.startsWith("HTTP/1.1 408")).toBe(true);
  });

  it("closes idle keep-alive connections", async () => {
    const s = await h1socket(idleServer.port, t());
    const end = socketClosed(s);
    s.write("POST /mimi.ds.v1.HubService/Ping HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n");
    const reply = await end;
    expect(reply).toMatch(/^HTTP\/1.1 200/);
  });
});

describe("TLS (Low)", () => {
  const hello = (o: tls.ConnectionOptions): Promise<string> =>
    new Promise((resolve) => {
      const s = tls.connect({ port: server.port, host: "127.0.0.1", servername: "localhost", ca: ca.ca, ...o }, () => {
        const got = `${s.getProtocol()} ${s.getCipher().name}`;
        s.destroy();
        resolve(got);
      });
      s.once("error", () => resolve("refused"));
    });

  it("offers TLS 1.2 only with forward-secret AEAD suites, never CBC or SHA-1", async () => {
    const tls12 = { minVersion: "TLSv1.2", maxVersion: "TLSv1.2" } as const;
    for (const cbc of ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256", "AES128-SHA", "AES128-GCM-SHA256"]) {
      expect(await hello({ ...tls12, ciphers: cbc }), cbc).toBe("refused");
    }
    expect(await hello({ ...tls12, ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" })).toBe("TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256");
    expect(await hello({ ...tls12, ciphers: "ECDHE-ECDSA-CHACHA20-POLY1305" })).toBe("TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305");
    expect(await hello({ minVersion: "TLSv1.1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" })).toBe("refused");
    expect((await hello({})).startsWith("TLSv1.3")).toBe(true);
  });
});
