// Graceful shutdown: health turns NOT_SERVING, in-flight calls finish, open
// streams are aborted after the drain timeout, sessions close, onClose runs last.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as S } from "../../gen/grpc/health/v1/health_pb.js";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { serviceRoute } from "../../src/server/index.js";
import { client, transport, type ClientTls } from "../helpers/clients.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer } from "../helpers/server.js";
import { createClient } from "@connectrpc/connect";

let ca: DevCa;
let tls: ClientTls;
beforeAll(async () => {
  ca = await makeDevCa(["hub.example"]);
  tls = { ca: ca.ca };
});
afterAll(() => ca.cleanup());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits for a condition, not for a time (a loaded machine is slow, never fast). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await sleep(10);
}

describe("graceful shutdown", () => {
  it("ends health watches with NOT_SERVING", async () => {
    const server = await startTestServer(ca, "hub.example", recordingHandler());
    const health = client(Health, "grpc", server.url, tls);
    const seen: S[] = [];
    const watching = (async () => {
      for await (const res of health.watch({ service: "" })) seen.push(res.status);
    })();
    await until(() => seen.length === 1);
    const closed = server.close();
    await watching; // the stream ends normally
    await closed;
    expect(seen).toEqual([S.SERVING, S.NOT_SERVING]);
  });

  it("lets in-flight calls finish, aborts open streams after the drain timeout, then runs onClose", async () => {
    const events: string[] = [];
    let streamSignal: AbortSignal | undefined;
    let unaryStarted = false;
    const handler = recordingHandler(async () => {
      unaryStarted = true;
      await sleep(300);
      events.push("unary done");
      return { response: new Uint8Array([0, 1, 0]) };
    });
    const server = await startTestServer(ca, "hub.example", handler, {
      drainTimeoutMs: 600,
      onClose: () => {
        events.push("onClose");
      },
      services: [
        serviceRoute(FanoutService, {
          async *subscribe(_req, ctx: HandlerContext) {
            streamSignal = ctx.signal;
            yield { sequence: 1n, dsFanoutRequest: new Uint8Array([1]) };
            // A subscription waits for more entries until the server stops it.
            await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
            events.push("stream aborted");
          },
        }),
      ],
    });

    const fanout = createClient(FanoutService, transport("grpc", server.url, tls));
    const received: bigint[] = [];
    const streaming = (async () => {
      for await (const res of fanout.subscribe({ resumeAfter: 0n })) received.push(res.sequence);
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    await until(() => received.length === 1);
    const hub = client(HubService, "grpc", server.url, tls);
    const unary = hub.submit({ dsRequest: new Uint8Array([1]) });
    await until(() => unaryStarted);

    const started = Date.now();
    await server.close();
    const took = Date.now() - started;

    expect((await unary).dsResponse).toEqual(new Uint8Array([0, 1, 0]));
    const streamErr = await streaming;
    expect(received).toEqual([1n]);
    expect(streamErr?.code).toBe(Code.Unavailable);
    expect(streamSignal?.aborted).toBe(true);
    expect(events).toEqual(["unary done", "stream aborted", "onClose"]);
    // The stream was given the drain timeout before it was aborted.
    expect(took).toBeGreaterThanOrEqual(550);

    // Closed means closed: no new calls, and close() stays idempotent.
    await expect(createClient(HubService, transport("connect", server.url, tls)).ping({})).rejects.toThrow();
    await server.close();
    const rpcs = server.logs.filter((l) => l.msg === "rpc").map((l) => `${l.method}:${l.code}`);
    expect(rpcs).toEqual(expect.arrayContaining(["Submit:ok", "Subscribe:unavailable"]));
  });

  it("closes promptly with idle connections of every protocol open", async () => {
    // Idle connections are closed at once: close() does not wait out the (long) drain timeout for them.
    const server = await startTestServer(ca, "hub.example", recordingHandler(), { drainTimeoutMs: 600_000 });
    for (const kind of ["grpc", "connect", "connect-h1", "grpc-web"] as const) {
      await client(HubService, kind, server.url, tls).ping({});
    }
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(300_000);
  });
});
