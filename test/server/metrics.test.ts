// Metrics, probes and request ids of a real `serve` process: after real
// traffic (real ts-mls members creating a group, adding, sending, one of them
// rate limited, a DSRequest that does not decode), a scrape of /metrics holds
// every series docs/operations.md lists, with the counts the traffic implies;
// /healthz and /readyz answer on the admin listener and on the TLS port; every
// RPC log line has a request id, the caller's own when it sent one.
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { get as httpsGet } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createDSTransport, DSClient, DSRequestError, MimiMember, type DSTransport } from "../../src/client/index.js";
import { decodeWith, externalSenderCodec } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

const A = "a.example";
let dir: string;
let ca: DevCa;
let serve: ServeProcess;
let metricsUrl: string;
const transports: DSTransport[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-metrics-"));
  ca = await makeDevCa([A]);
  serve = await spawnServe({ domain: A, dataDir: join(dir, "data"), certsDir: ca.dir, args: ["--metrics-listen", "127.0.0.1:0", "--rate-limit-group", "4/h"] });
  metricsUrl = String(serve.lines.find((l) => l.msg === "listening")!.metrics);
});
afterAll(async () => {
  for (const t of transports) t.close();
  await serve?.stop();
  await ca?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

function transport(): DSTransport {
  const t = createDSTransport({ baseUrl: serve.url, ca: ca.ca });
  transports.push(t);
  return t;
}

async function member(name: string, keyPackages: number): Promise<MimiMember> {
  const t = transport();
  const m = await MimiMember.create({ clientId: `mimi://${A}/u/${name}/d/1`, hub: new DSClient(t), local: t });
  await m.register();
  if (keyPackages > 0) await m.publishKeyPackages(keyPackages);
  return m;
}

/** GET over plain HTTP (the admin listener). */
async function plain(path: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(new URL(path, metricsUrl));
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type") };
}

/** GET over HTTPS on the DS's own port (HTTP/1.1, no client certificate). */
function tls(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpsGet(`${serve.url}${path}`, { ca: ca.ca }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

/** The value of one sample of the exposition, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe("a real serve process", () => {
  it("exposes every documented series, counting the traffic it saw", async () => {
    const hub = createClient(HubService, transport());
    await hub.ping({});
    // A DSRequest whose type byte is 255: decode_error, counted under operation "unknown".
    await expect(hub.submit({ dsRequest: new Uint8Array([0, 1, 255]) })).rejects.toThrow();

    const alice = await member("alice", 0);
    const bob = await member("bob", 2);
    const info = await hub.hubInfo({ cipherSuite: 1 });
    await alice.createGroup(decodeWith(externalSenderCodec, info.externalSender, "ExternalSender"));
    await alice.addClients([bob.clientId]);
    // --rate-limit-group 4/h: the group's fourth request after the add is refused.
    let sent = 0;
    let limited = 0;
    for (let i = 0; i < 6 && limited === 0; i++) {
      try {
        await alice.send(`hello ${i}`);
        sent++;
      } catch (err) {
        expect(err).toBeInstanceOf(DSRequestError);
        expect((err as DSRequestError).codeName).toBe("rate_limited");
        limited++;
      }
    }
    expect(sent).toBeGreaterThan(0);
    expect(limited).toBe(1);
    // bob's Receive stream stays open while we scrape.
    const abort = new AbortController();
    const receiving = (async () => {
      try {
        for await (const _ of bob.local!.receive(0n, abort.signal)) void _;
      } catch {
        // aborted
      }
    })();
    await new Promise((r) => setTimeout(r, 500));

    const scrape = await plain("/metrics");
    abort.abort();
    await receiving;
    expect(scrape.status).toBe(200);
    expect(scrape.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = scrape.body;

    // Every mimi_ds_ series in docs/operations.md is exposed, and nothing undocumented.
    const doc = await readFile(join(process.cwd(), "docs", "operations.md"), "utf8");
    const documented = new Set([...doc.matchAll(/^\| `(mimi_ds_\w+)/gm)].map((m) => m[1]!));
    const exposed = new Set([...text.matchAll(/^# HELP (mimi_ds_\w+)/gm)].map((m) => m[1]!));
    // Only present when the group cache accounts for its memory.
    const conditional = new Set(["mimi_ds_groups_cache_bytes"]);
    expect([...documented].filter((n) => !exposed.has(n) && !conditional.has(n))).toEqual([]);
    expect([...exposed].filter((n) => !documented.has(n))).toEqual([]);
    expect(documented.size).toBeGreaterThan(20);

    const hubSvc = { service: "mimi.ds.v1.HubService" };
    expect(sample(text, "mimi_ds_build_info", { version: JSON.parse(await readFile("package.json", "utf8")).version })).toBe(1);
    expect(sample(text, "mimi_ds_rpc_requests_total", { ...hubSvc, method: "Ping", code: "ok" })).toBe(1);
    expect(sample(text, "mimi_ds_rpc_duration_seconds_count", { ...hubSvc, method: "Ping", code: "ok" })).toBe(1);
    expect(sample(text, "mimi_ds_rpc_requests_total", { ...hubSvc, method: "Submit", code: "invalid_argument" })).toBe(1);
    expect(sample(text, "mimi_ds_rpc_requests_total", { ...hubSvc, method: "Submit", code: "resource_exhausted" })).toBe(1);
    expect(sample(text, "mimi_ds_rpc_streams_open", { service: "mimi.ds.v1.ClientService", method: "Receive" })).toBe(1);
    expect(sample(text, "mimi_ds_ds_requests_total", { operation: "unknown", result: "decode_error" })).toBe(1);
    expect(sample(text, "mimi_ds_ds_requests_total", { operation: "create_group", result: "ok" })).toBe(1);
    expect(sample(text, "mimi_ds_ds_requests_total", { operation: "add_clients", result: "ok" })).toBe(1);
    expect(sample(text, "mimi_ds_ds_requests_total", { operation: "send_message", result: "ok" })).toBe(sent);
    expect(sample(text, "mimi_ds_ds_requests_total", { operation: "send_message", result: "rate_limited" })).toBe(1);
    expect(sample(text, "mimi_ds_commits_accepted_total", { operation: "add_clients" })).toBe(1);
    expect(sample(text, "mimi_ds_messages_accepted_total")).toBe(sent);
    expect(sample(text, "mimi_ds_rate_limit_hits_total", { limit: "dsrequest" })).toBe(1);
    expect(sample(text, "mimi_ds_groups_hosted")).toBe(1);
    expect(sample(text, "mimi_ds_groups_cached")).toBe(1);
    expect(sample(text, "mimi_ds_store_duration_seconds_count", { operation: "apply" })).toBeGreaterThanOrEqual(4 + sent);
    expect(sample(text, "mimi_ds_store_group_commit_applies_count")).toBeGreaterThan(0);
    expect(sample(text, "mimi_ds_store_group_commit_applies_sum")).toBeGreaterThanOrEqual(sample(text, "mimi_ds_store_group_commit_applies_count")!);
    // bob's Welcome (and the messages pulled from the group feed) wait unacknowledged in his queue.
    expect(sample(text, "mimi_ds_client_queue_backlog_entries")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "mimi_ds_client_queues_nonempty")).toBe(1);
    expect(sample(text, "mimi_ds_client_queue_oldest_age_seconds")).toBeGreaterThan(0);
    // prom-client's process and Node.js series.
    expect(sample(text, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(text).toContain("nodejs_eventloop_lag_seconds");
    // No client or group identifier appears in any label.
    expect(text).not.toContain("mimi://");
    expect(text).not.toContain("@a.example");
  });

  it("answers /healthz and /readyz on the admin listener and on the TLS port, and nothing else there", async () => {
    expect(await plain("/healthz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await plain("/readyz")).toMatchObject({ status: 200, body: "ready\n" });
    expect((await plain("/nope")).status).toBe(404);
    expect(await tls("/healthz")).toEqual({ status: 200, body: "ok\n" });
    expect(await tls("/readyz")).toEqual({ status: 200, body: "ready\n" });
    // The TLS port does not expose metrics.
    expect((await tls("/metrics")).status).not.toBe(200);
  });

  it("puts a request id in every rpc log line, the caller's own when well-formed, and sends it back", async () => {
    const hub = createClient(HubService, transport());
    let echoed: string | null = null;
    await hub.ping({}, { headers: { "x-request-id": "probe-42" }, onHeader: (h) => (echoed = h.get("x-request-id")) });
    expect(echoed).toBe("probe-42");
    await hub.ping({}, { headers: { "x-request-id": "no spaces allowed" }, onHeader: (h) => (echoed = h.get("x-request-id")) });
    expect(echoed).not.toBe("no spaces allowed");
    expect(echoed).toMatch(/^[a-z0-9]+-[a-z0-9]+$/);
    // A failed call carries it too (as a trailer, with the error).
    const err = await hub.submit({ dsRequest: new Uint8Array([9]) }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.metadata.get("x-request-id")).toMatch(/^[a-z0-9]+-[a-z0-9]+$/);

    await new Promise((r) => setTimeout(r, 200));
    const rpcs = serve.lines.filter((l) => l.msg === "rpc");
    expect(rpcs.length).toBeGreaterThan(10);
    for (const l of rpcs) expect(typeof l.rid, JSON.stringify(l)).toBe("string");
    expect(rpcs.find((l) => l.rid === "probe-42")).toMatchObject({ method: "Ping", code: "ok" });
    expect(new Set(rpcs.map((l) => l.rid)).size).toBe(rpcs.length);
  });
});
