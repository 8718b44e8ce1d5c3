// Hub -> guest fanout over real mutual TLS: a hub server with FanoutService,
// a guest server with ClientService and a GuestConsumer, each with its own
// SQLite store; DSFanoutRequests signed by a real HubIdentity.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import type { DSTransport } from "../../src/client/transport.js";
import {
  createClientService,
  createFanoutService,
  FanoutTokenKeys,
  GuestConsumer,
  loadPeers,
  parsePeers,
  processFanoutRequest,
  processedHighWater,
  updateBlocks,
  type ClientServiceHandle,
  type FanoutServiceHandle,
  type GuestDeps,
  type PeerDirectory,
} from "../../src/delivery/index.js";
import { signedFanoutRequest } from "../../src/ds/fanout.js";
import { HubIdentity } from "../../src/ds/hub-identity.js";
import { clientQueue, outboxQueue } from "../../src/store/index.js";
import { DSFanoutErrorCode, decodeDSFanoutResponse, encodeDSFanoutResponse, type DSFanoutResponse } from "../../src/wire/index.js";
import { transport as rawTransport } from "../helpers/clients.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { pullInbox } from "../helpers/inbox.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";
import { b64, dsTransport, MessageSource, tempStore, TestClient, waitFor, type TempStore } from "./helpers.js";

let ca: DevCa;
let otherCa: DevCa;
let hubDb: TempStore;
let guestDb: TempStore;
let hub: HubIdentity;
let hubServer: TestServer;
let guestServer: TestServer;
let fanout: FanoutServiceHandle;
let clients: ClientServiceHandle;
let guestTransport: DSTransport;
let peers: PeerDirectory;
let alice: TestClient;
let bob: TestClient;
let source: MessageSource;
const tokens = FanoutTokenKeys.generate();

beforeAll(async () => {
  ca = await makeDevCa(["a.example", "b.example"]);
  otherCa = await makeDevCa(["a.example"]);
  hubDb = await tempStore();
  guestDb = await tempStore();
  hub = await HubIdentity.open("b.example");
  fanout = createFanoutService({ store: hubDb.store });
  hubServer = await startTestServer(ca, "b.example", recordingHandler(), { services: [fanout.route], drainTimeoutMs: 500 });
  clients = createClientService({ domain: "a.example", store: guestDb.store, tokens, registration: { open: true } });
  guestServer = await startTestServer(ca, "a.example", recordingHandler(), { services: [clients.route], drainTimeoutMs: 500 });
  guestTransport = dsTransport(guestServer.url, ca.ca);
  const peersFile = join(ca.dir, "peers.json");
  await writeFile(
    peersFile,
    JSON.stringify([{ domain: "b.example", endpoint: hubServer.url, ca: "ca.pem", dsSignatureKey: b64(hub.fanoutPublicKey) }]),
  );
  peers = loadPeers(peersFile);
  alice = await TestClient.create("alice:1@a.example", guestTransport);
  bob = await TestClient.create("bob:1@a.example", guestTransport);
  await alice.register();
  await bob.register();
  source = await MessageSource.create();
});
afterAll(async () => {
  guestTransport.close();
  fanout.close();
  clients.close();
  await hubServer.close();
  await guestServer.close();
  await hubDb.cleanup();
  await guestDb.cleanup();
  await ca.cleanup();
  await otherCa.cleanup();
});

function consumer(extra: Partial<GuestDeps> = {}): GuestConsumer {
  const a = ca.domain("a.example");
  return new GuestConsumer({
    domain: "a.example",
    store: guestDb.store,
    tokens,
    peers,
    tls: { cert: a.cert, key: a.key },
    backoff: { initialMs: 50, maxMs: 500 },
    ...extra,
  });
}

/** Hub side: one signed DSFanoutRequest for the recipients, appended to a.example's outbox. */
async function hubSends(recipients: { clientId: string; token?: Uint8Array }[], message: Uint8Array): Promise<bigint> {
  const payload = await signedFanoutRequest(hub, recipients, message);
  const r = await hubDb.store.apply({ ops: [{ kind: "append", queue: outboxQueue("a.example"), payload }] });
  return r.appended[0]!.seq;
}

/** What the client's Receive stream would deliver: its queue after pulling its feeds (fanout for a group is stored once per request). */
async function queued(clientId: string): Promise<Uint8Array[]> {
  await pullInbox(guestDb.store, clientId);
  return (await guestDb.store.read(clientQueue(clientId), 0n, 1000)).map((e) => e.payload);
}

const same = (a: readonly Uint8Array[], b: readonly Uint8Array[]) => a.map(b64).join() === b.map(b64).join();

describe("hub to guest", () => {
  it("delivers signed fanout in order; a restarted guest gets everything once, in order", async () => {
    const sent: Uint8Array[] = [];
    const c1 = consumer();
    c1.start();
    for (let i = 0; i < 5; i++) {
      const m = await source.next(`first ${i}`);
      sent.push(m);
      await hubSends(
        [
          { clientId: alice.clientId, token: alice.token! },
          { clientId: bob.clientId, token: bob.token! },
        ],
        m,
      );
    }
    await waitFor(async () => (await queued(alice.clientId)).length === 5, 15_000, "first batch");
    // The MLSMessage bytes arrive as the hub sent them, for every recipient.
    expect(same(await queued(alice.clientId), sent)).toBe(true);
    expect(same(await queued(bob.clientId), sent)).toBe(true);
    await waitFor(async () => (await hubDb.store.queueInfo(outboxQueue("a.example"))).length === 0, 10_000, "hub outbox acknowledged");
    await c1.stop();

    // While the guest is down the hub keeps what it fans out.
    for (let i = 0; i < 4; i++) {
      const m = await source.next(`second ${i}`);
      sent.push(m);
      await hubSends([{ clientId: alice.clientId, token: alice.token! }], m);
    }
    expect((await hubDb.store.queueInfo(outboxQueue("a.example"))).length).toBe(4);
    expect(await processedHighWater(guestDb.store, "b.example")).toBe(5n);

    const c2 = consumer();
    c2.start();
    await waitFor(async () => (await queued(alice.clientId)).length === 9, 15_000, "second batch");
    await waitFor(async () => (await hubDb.store.queueInfo(outboxQueue("a.example"))).length === 0, 10_000, "outbox drained");
    await c2.stop();
    expect(same(await queued(alice.clientId), sent)).toBe(true);
    expect((await queued(bob.clientId)).length).toBe(5);
    expect(await processedHighWater(guestDb.store, "b.example")).toBe(9n);

    // The local client reads its queue through ClientService.
    const got: Uint8Array[] = [];
    const stop = new AbortController();
    const reading = (async () => {
      for await (const m of alice.api!.receive(0n, stop.signal)) got.push(m.mlsMessage);
    })().catch(() => undefined);
    await waitFor(() => got.length === 9, 10_000, "client stream");
    stop.abort();
    await reading;
    expect(same(got, sent)).toBe(true);
  });

  it("a hub restart in the middle: acknowledged entries are not sent again, the rest arrive once", async () => {
    // Simulates an ack that never reached the hub: the guest processed 1..N,
    // the hub still holds them; on Subscribe(resume_after = N) the hub drops them.
    const before = (await queued(bob.clientId)).length;
    const m = await source.next("resent");
    const seq = await hubSends([{ clientId: bob.clientId, token: bob.token! }], m);
    const deps = { domain: "a.example", store: guestDb.store, tokens, peers };
    const payload = (await hubDb.store.read(outboxQueue("a.example"), seq - 1n, 1))[0]!.payload;
    const first = await processFanoutRequest(deps, "b.example", seq, payload);
    expect(first.delivered).toEqual([bob.clientId]);
    const again = await processFanoutRequest(deps, "b.example", seq, payload);
    expect(again.duplicate).toBe(true);
    expect(again.response.responseBody.responseType).toBe("ok");
    const c = consumer();
    c.start();
    await waitFor(async () => (await hubDb.store.queueInfo(outboxQueue("a.example"))).length === 0, 10_000, "outbox drained");
    await c.stop();
    expect((await queued(bob.clientId)).length).toBe(before + 1);
  });

  it("refuses subscribers without a client certificate or with one from another CA", async () => {
    const noCert = createClient(FanoutService, rawTransport("grpc", hubServer.url, { ca: ca.ca }));
    const foreign = createClient(
      FanoutService,
      rawTransport("grpc", hubServer.url, { ca: ca.ca, cert: otherCa.domain("a.example").cert, key: otherCa.domain("a.example").key }),
    );
    for (const c of [noCert, foreign]) {
      const err = await (async () => {
        for await (const _ of c.subscribe({ resumeAfter: 0n })) void _;
      })().then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.Unauthenticated);
      const ackErr = await c.acknowledge({ sequence: 1n, dsFanoutResponse: new Uint8Array() }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(ackErr?.code).toBe(Code.Unauthenticated);
    }
  });

  it("the hub acknowledges rejected entries and records the guest's error", async () => {
    const m = await source.next("to nobody");
    await hubSends([{ clientId: "nobody:1@a.example", token: alice.token! }], m);
    const c = consumer();
    c.start();
    // The outbox empties when the ack's write commits; the error is recorded right after it.
    await waitFor(
      async () => (await hubDb.store.queueInfo(outboxQueue("a.example"))).length === 0 && fanout.stats.rejected.has("a.example unknown_recipient"),
      10_000,
      "rejected entry acknowledged and recorded",
    );
    await c.stop();
    expect(fanout.stats.rejected.get("a.example unknown_recipient")).toBe(1);
  });

  it("holds rate-limited fanout until the window ends, then delivers it in order", async () => {
    const before = (await queued(alice.clientId)).length;
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 6; i++) {
      const m = await source.next(`limited ${i}`);
      sent.push(m);
      await hubSends([{ clientId: alice.clientId, token: alice.token! }], m);
    }
    const started = Date.now();
    const c = consumer({ rateLimit: { limit: 2, windowMs: 400 } });
    c.start();
    await waitFor(async () => (await queued(alice.clientId)).length === before + 6, 15_000, "rate-limited delivery");
    const took = Date.now() - started;
    await waitFor(async () => (await hubDb.store.queueInfo(outboxQueue("a.example"))).length === 0, 10_000, "drained");
    await c.stop();
    expect(same((await queued(alice.clientId)).slice(before), sent)).toBe(true);
    expect(took).toBeGreaterThanOrEqual(400); // at least two windows were waited for (not a timing assertion on speed)
  });
});

describe("guest checks (processFanoutRequest)", () => {
  // A second hub, c.example, so these sequences do not mix with b.example's stream.
  let hubC: HubIdentity;
  let direct: PeerDirectory;
  let deps: GuestDeps;
  let seq = 0n;
  beforeAll(async () => {
    hubC = await HubIdentity.open("c.example");
    direct = parsePeers(
      [{ domain: "c.example", endpoint: "https://localhost:1", ca: ca.caPath, dsSignatureKey: b64(hubC.fanoutPublicKey) }],
    );
    deps = { domain: "a.example", store: guestDb.store, tokens, peers: direct };
  });

  const errorOf = (r: DSFanoutResponse) => (r.responseBody.responseType === "error" ? r.responseBody.error : undefined);
  const names = (ids: readonly Uint8Array[]) => ids.map((i) => new TextDecoder().decode(i));

  it("accepts a valid request once; a duplicate is ok without enqueuing again", async () => {
    const m = await source.next("direct");
    const bytes = await signedFanoutRequest(hubC, [{ clientId: alice.clientId, token: alice.token! }], m);
    const n = (await queued(alice.clientId)).length;
    const r = await processFanoutRequest(deps, "c.example", ++seq, bytes);
    expect(r.response.responseBody.responseType).toBe("ok");
    expect(r.delivered).toEqual([alice.clientId]);
    const dup = await processFanoutRequest(deps, "c.example", seq, bytes);
    expect(dup.duplicate).toBe(true);
    expect(dup.response.responseBody.responseType).toBe("ok");
    expect((await queued(alice.clientId)).length).toBe(n + 1);
    // The response is what the consumer sends back.
    expect(decodeDSFanoutResponse(encodeDSFanoutResponse(r.response))).toEqual(r.response);
  });

  it("rejects a signature that does not verify and a hub_domain that is not the authenticated hub", async () => {
    const m = await source.next("x");
    const impostor = await HubIdentity.open("c.example"); // same domain, another key
    const forged = await signedFanoutRequest(impostor, [{ clientId: alice.clientId, token: alice.token! }], m);
    const n = (await queued(alice.clientId)).length;
    const r = await processFanoutRequest(deps, "c.example", ++seq, forged);
    expect(errorOf(r.response)?.code).toBe(DSFanoutErrorCode.bad_signature);
    // Signed correctly by b.example's hub, but arriving over c.example's connection.
    const fromB = await signedFanoutRequest(hub, [{ clientId: alice.clientId, token: alice.token! }], m);
    const r2 = await processFanoutRequest(deps, "c.example", ++seq, fromB);
    expect(errorOf(r2.response)?.code).toBe(DSFanoutErrorCode.bad_signature);
    // Tampered bytes (a flipped bit in the signed part).
    const good = await signedFanoutRequest(hubC, [{ clientId: alice.clientId, token: alice.token! }], m);
    const tampered = new Uint8Array(good);
    tampered[good.length - 70]! ^= 1;
    const r3 = await processFanoutRequest(deps, "c.example", ++seq, tampered);
    expect([DSFanoutErrorCode.bad_signature, DSFanoutErrorCode.malformed]).toContain(errorOf(r3.response)?.code);
    const r4 = await processFanoutRequest(deps, "c.example", ++seq, Uint8Array.of(0, 1, 2));
    expect(errorOf(r4.response)?.code).toBe(DSFanoutErrorCode.malformed);
    expect((await queued(alice.clientId)).length).toBe(n);
  });

  it("rejects recipients that are not our clients, forged tokens and other clients' tokens; delivers to the rest", async () => {
    const m = await source.next("mixed");
    const forged = new Uint8Array(alice.token!);
    forged[20]! ^= 0x40;
    const nA = (await queued(alice.clientId)).length;
    const nB = (await queued(bob.clientId)).length;

    const unknown = await processFanoutRequest(
      deps,
      "c.example",
      ++seq,
      await signedFanoutRequest(
        hubC,
        [
          { clientId: alice.clientId, token: alice.token! },
          { clientId: "zoe:1@a.example", token: alice.token! },
          { clientId: "yan:1@d.example", token: alice.token! },
        ],
        m,
      ),
    );
    expect(errorOf(unknown.response)?.code).toBe(DSFanoutErrorCode.unknown_recipient);
    expect(names(errorOf(unknown.response)!.rejectedRecipients)).toEqual(["zoe:1@a.example", "yan:1@d.example"]);
    expect(unknown.delivered).toEqual([alice.clientId]);

    const forgedR = await processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, [{ clientId: alice.clientId, token: forged }], m));
    expect(errorOf(forgedR.response)?.code).toBe(DSFanoutErrorCode.invalid_token);
    expect(names(errorOf(forgedR.response)!.rejectedRecipients)).toEqual([alice.clientId]);

    // Alice's (valid) token replayed for Bob.
    const replay = await processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, [{ clientId: bob.clientId, token: alice.token! }], m));
    expect(errorOf(replay.response)?.code).toBe(DSFanoutErrorCode.invalid_token);
    const missing = await processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, [{ clientId: bob.clientId }], m));
    expect(errorOf(missing.response)?.code).toBe(DSFanoutErrorCode.invalid_token);
    // A token made with another domain's key.
    const otherDomain = FanoutTokenKeys.generate().issue(bob.clientId);
    const foreignKey = await processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, [{ clientId: bob.clientId, token: otherDomain }], m));
    expect(errorOf(foreignKey.response)?.code).toBe(DSFanoutErrorCode.invalid_token);

    expect((await queued(alice.clientId)).length).toBe(nA + 1);
    expect((await queued(bob.clientId)).length).toBe(nB);
  });

  it("rejects a protocol version it does not support", async () => {
    const m = await source.next("v2");
    const bytes = await signedFanoutRequest(hubC, [{ clientId: alice.clientId, token: alice.token! }], m);
    const v2 = new Uint8Array(bytes);
    v2[1] = 2; // protocol_version is the first uint16
    const r = await processFanoutRequest(deps, "c.example", ++seq, v2);
    expect(errorOf(r.response)?.code).toBe(DSFanoutErrorCode.unsupported_version);
  });

  it("refuses fanout a client blocked, by hub domain or by group", async () => {
    const carl = await TestClient.create("carl:1@a.example", guestTransport);
    await carl.register();
    const m = await source.next("blocked?");
    const send = async () =>
      processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, [{ clientId: carl.clientId, token: carl.token! }], m));
    await updateBlocks(guestDb.store, carl.clientId, { blockGroups: [source.groupId] });
    expect(errorOf((await send()).response)?.code).toBe(DSFanoutErrorCode.blocked);
    await updateBlocks(guestDb.store, carl.clientId, { unblockGroups: [source.groupId], blockDomains: ["C.example"] });
    expect(errorOf((await send()).response)?.code).toBe(DSFanoutErrorCode.blocked);
    await updateBlocks(guestDb.store, carl.clientId, { unblockDomains: ["c.example"] });
    expect((await send()).response.responseBody.responseType).toBe("ok");
    expect((await queued(carl.clientId)).length).toBe(1);
  });

  it("answers rate_limited over the limit, without marking the entry processed", async () => {
    const limited: GuestDeps = { ...deps, rateLimit: { limit: 2, windowMs: 60_000 } };
    const m = await source.next("limit");
    const bytes = await signedFanoutRequest(hubC, [{ clientId: alice.clientId, token: alice.token! }], m);
    // A fresh window key per run: the limiter counts per hub domain.
    const r1 = await processFanoutRequest(limited, "c.example", ++seq, bytes);
    const r2 = await processFanoutRequest(limited, "c.example", ++seq, bytes);
    const s3 = ++seq;
    const r3 = await processFanoutRequest(limited, "c.example", s3, bytes);
    expect(r1.response.responseBody.responseType).toBe("ok");
    expect(r2.response.responseBody.responseType).toBe("ok");
    expect(errorOf(r3.response)?.code).toBe(DSFanoutErrorCode.rate_limited);
    expect(r3.retryAt).toBeGreaterThan(Date.now());
    expect(await guestDb.store.isProcessed("c.example", s3)).toBe(false);
    // Without the limit the same entry goes through.
    expect((await processFanoutRequest(deps, "c.example", s3, bytes)).response.responseBody.responseType).toBe("ok");
  });
});
