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
  type GuestConsumerOptions,
  type GuestDeps,
  type PeerDirectory,
} from "../../src/delivery/index.js";
import { createHash, createPublicKey, verify } from "node:crypto";
import { fanoutHead, headDigest, signedFanoutRequest, signedTail } from "../../src/ds/fanout.js";
import { serviceRoute } from "../../src/server/server.js";
import { prng } from "../helpers/prng.js";
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
  fanout = createFanoutService({ store: hubDb.store, hub });
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

function consumer(extra: Partial<GuestConsumerOptions> = {}): GuestConsumer {
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

// Heads by reference (SubscribeRequest.heads_by_reference): the recipient list
// of an epoch crosses the stream once, each message as head id + tail, signed
// over the whole request or (head_digest_signatures) over the head's digest.
describe("heads by reference", () => {
  const outbox = outboxQueue("a.example");
  const aCert = () => ca.domain("a.example");
  const raw = () => createClient(FanoutService, rawTransport("grpc", hubServer.url, { ca: ca.ca, cert: aCert().cert, key: aCert().key }));
  type Entry = { sequence: bigint; dsFanoutRequest: Uint8Array; headId: bigint; head: Uint8Array; tail: Uint8Array; headDigestSignature: boolean };

  /** The first `n` entries after `after` of one Subscribe stream. */
  async function take(n: number, after: bigint, headsByReference: boolean, headDigestSignatures = false): Promise<Entry[]> {
    const stop = new AbortController();
    const got: Entry[] = [];
    try {
      for await (const e of raw().subscribe({ resumeAfter: after, headsByReference, headDigestSignatures }, { signal: stop.signal })) {
        got.push(e);
        if (got.length === n) break;
      }
    } finally {
      stop.abort();
    }
    return got;
  }

  /** RFC 9420 SignContent and a varint, written here from the RFC rather than taken from src/wire. */
  const varint = (n: number) => (n < 64 ? [n] : n < 16384 ? [0x40 | (n >> 8), n & 0xff] : [0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  const opaque = (b: Uint8Array) => Buffer.concat([Buffer.from(varint(b.length)), b]);
  const signContent = (label: string, content: Uint8Array) => Buffer.concat([opaque(Buffer.from(`MLS 1.0 ${label}`)), opaque(content)]);
  const ed25519 = () => createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64url(hub.fanoutPublicKey) }, format: "jwk" });
  const b64url = (b: Uint8Array) => Buffer.from(b).toString("base64url");
  /** The request's tail cut as the draft's struct says: mls_message, then signature<V> (a varint length). */
  const splitTail = (tail: Uint8Array, messageLength: number) => {
    const rest = tail.subarray(messageLength);
    return { message: tail.subarray(0, messageLength), signature: rest.subarray(1 << (rest[0]! >> 6)) };
  };

  /** Appends `total` entries of a seeded mix; returns what alice and bob must get and the messages by sequence. */
  async function appendMix(seed: number, total: number) {
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const sources = [source, await MessageSource.create("carol:2@b.example"), await MessageSource.create("carol:3@b.example")];
    // Sections: alice and / or bob (valid tokens) and a client that is not ours, in many distinct lists (more than 16 heads).
    const sections: { clientId: string; token?: Uint8Array }[][] = [];
    for (let i = 0; i < 40; i++) {
      const list: { clientId: string; token?: Uint8Array }[] = [];
      if (rnd() < 0.6) list.push({ clientId: alice.clientId, token: alice.token! });
      if (rnd() < 0.6) list.push({ clientId: bob.clientId, token: bob.token! });
      list.push({ clientId: `stranger${i}:1@a.example`, token: alice.token! });
      if (rnd() < 0.5) list.reverse();
      sections.push(list);
    }
    const before = (await hubDb.store.queueInfo(outbox)).lastSeq;
    const sent: { list: { clientId: string; token?: Uint8Array }[]; message: Uint8Array; stored: "whole" | "signed" | "unsigned" }[] = [];
    let recent = 0;
    for (let i = 0; i < total; i++) {
      // Mostly a few recent heads (an epoch's messages), sometimes any of 40 (more than the guest keeps).
      const r = rnd();
      if (r < 0.15) recent = Math.floor(rnd() * sections.length);
      const list = r < 0.75 ? sections[(recent + Math.floor(rnd() * 3)) % sections.length]! : sections[Math.floor(rnd() * sections.length)]!;
      const message = await pick(sources).next(`heads ${seed} ${i}`);
      // As src/ds/fanout.ts stores them: whole (explicit recipients), or the head as a shared prefix and the
      // message alone; and as it stored them before heads were signed when streamed (message || signature).
      const stored = rnd() < 0.1 ? "whole" : rnd() < 0.25 ? "signed" : "unsigned";
      sent.push({ list, message, stored });
      if (stored === "whole") {
        await hubSends(list, message);
        continue;
      }
      const head = fanoutHead(hub, list);
      const ref = createHash("sha256").update(head).digest("base64url");
      const payload = stored === "signed" ? await signedTail(hub, head, message) : message;
      await hubDb.store.apply({ ops: [{ kind: "append", queue: outbox, payload, prefix: { groupId: "heads-test", epoch: 0n, ref, bytes: head } }] });
    }
    return { before, sent };
  }

  /** Checks a stream by reference against the whole requests (the guest's rules, kept independently here). */
  function reconstruct(byRef: readonly Entry[], whole: readonly Uint8Array[]) {
    const kept = new Map<bigint, Uint8Array>();
    let last = 0n;
    const introduced = new Set<string>();
    let reintroduced = 0;
    let streamed = 0;
    const heads: (Uint8Array | undefined)[] = [];
    for (const [i, e] of byRef.entries()) {
      streamed += e.dsFanoutRequest.length + e.head.length + e.tail.length;
      if (e.headId === 0n) {
        expect(e.headDigestSignature).toBe(false);
        expect(b64(e.dsFanoutRequest)).toBe(b64(whole[i]!));
        heads.push(undefined);
        continue;
      }
      expect(e.dsFanoutRequest.length).toBe(0);
      if (e.head.length > 0) {
        expect(e.headId).toBeGreaterThan(last);
        last = e.headId;
        if (introduced.has(b64(e.head))) reintroduced++;
        introduced.add(b64(e.head));
        kept.set(e.headId, e.head);
        if (kept.size > 16) kept.delete(kept.keys().next().value!);
      }
      const head = kept.get(e.headId);
      expect(head, `entry ${e.sequence} refers to head ${e.headId}, not kept`).toBeDefined();
      heads.push(head);
    }
    // A head is sent once while it stays among the kept ones (the mix also sends some again after they dropped out).
    expect(reintroduced).toBeGreaterThan(0);
    expect(introduced.size + reintroduced).toBeLessThan(byRef.length / 2);
    expect(streamed).toBeLessThan(whole.reduce((n, w) => n + w.length, 0));
    return heads;
  }

  for (const [seed, mode] of [
    [16, { headsByReference: true, headDigestSignatures: true }],
    [17, { headsByReference: true, headDigestSignatures: false }],
    [18, { headsByReference: false }],
  ] as const) {
    it(`seed ${seed}: a mix of groups, heads and stored forms streams as the -05 requests, by reference and by digest; a guest (${JSON.stringify(mode)}) delivers exactly to the listed`, async () => {
      const total = 150;
      const beforeAlice = (await queued(alice.clientId)).length;
      const beforeBob = (await queued(bob.clientId)).length;
      const { before, sent } = await appendMix(Number(process.env.HEADS_SEED ?? seed), total);

      // Whole: byte for byte the signed -05 DSFanoutRequest, however the entry was stored.
      const whole = await take(total, before, false);
      for (const [i, e] of whole.entries()) {
        expect(e.headId).toBe(0n);
        expect(b64(e.dsFanoutRequest), `entry ${e.sequence}`).toBe(b64(await signedFanoutRequest(hub, sent[i]!.list, sent[i]!.message)));
      }
      const wholeBytes = whole.map((e) => e.dsFanoutRequest);
      // By reference, whole-request signatures: head || tail is that request.
      const byRef = await take(total, before, true);
      const heads = reconstruct(byRef, wholeBytes);
      for (const [i, e] of byRef.entries()) if (e.headId !== 0n) expect(b64(Buffer.concat([heads[i]!, e.tail]))).toBe(b64(wholeBytes[i]!));
      // By reference, head-digest signatures for the entries stored unsigned; entries stored signed go out as stored.
      const byDigest = await take(total, before, true, true);
      const digestHeads = reconstruct(byDigest, wholeBytes);
      for (const [i, e] of byDigest.entries()) {
        if (e.headId === 0n) continue;
        const { message, stored } = sent[i]!;
        expect(e.headDigestSignature).toBe(stored === "unsigned");
        if (!e.headDigestSignature) {
          expect(b64(Buffer.concat([digestHeads[i]!, e.tail]))).toBe(b64(wholeBytes[i]!));
          continue;
        }
        const { message: m, signature } = splitTail(e.tail, message.length);
        expect(b64(m)).toBe(b64(message));
        const tbs = Buffer.concat([opaque(createHash("sha256").update(digestHeads[i]!).digest()), message]);
        expect(verify(null, signContent("DSFanoutRequestHeadDigest", tbs), ed25519(), signature)).toBe(true);
        // Not a whole-request signature, and not valid for another head.
        expect(verify(null, signContent("DSFanoutRequest", Buffer.concat([digestHeads[i]!, message])), ed25519(), signature)).toBe(false);
      }

      // A guest delivers exactly what the whole requests say.
      const c = consumer(mode);
      c.start();
      await waitFor(async () => (await hubDb.store.queueInfo(outbox)).length === 0, 20_000, "outbox drained");
      await c.stop();
      // Each group is a guest feed of its own, pulled feed by feed: the same messages, in order within each group.
      const sorted = (xs: readonly Uint8Array[]) => xs.map(b64).sort();
      const to = (id: string) => sent.filter((s) => s.list.some((x) => x.clientId === id)).map((s) => s.message);
      expect(sorted((await queued(alice.clientId)).slice(beforeAlice))).toEqual(sorted(to(alice.clientId)));
      expect(sorted((await queued(bob.clientId)).slice(beforeBob))).toEqual(sorted(to(bob.clientId)));
    });
  }

  it("a damaged outbox entry (its own bytes are not an MLSMessage) is sent as stored, refused by the guest, and does not hold up the stream", async () => {
    const beforeAlice = (await queued(alice.clientId)).length;
    const head = fanoutHead(hub, [{ clientId: alice.clientId, token: alice.token! }]);
    const prefix = { groupId: "heads-test", epoch: 0n, ref: "damaged", bytes: head };
    const good = await source.next("after the damaged one");
    const rejectedBefore = fanout.stats.rejected.get("a.example malformed") ?? 0;
    await hubDb.store.apply({
      ops: [
        { kind: "append", queue: outbox, payload: Uint8Array.of(0xff, 0xff, 0xff), prefix },
        { kind: "append", queue: outbox, payload: good, prefix },
      ],
    });
    const c = consumer();
    c.start();
    await waitFor(async () => (await hubDb.store.queueInfo(outbox)).length === 0 && (fanout.stats.rejected.get("a.example malformed") ?? 0) > rejectedBefore, 10_000, "drained");
    await c.stop();
    expect(same((await queued(alice.clientId)).slice(beforeAlice), [good])).toBe(true);
  });

  describe("a hub that breaks the rules", () => {
    // A hostile b.example (its real signature key, so only the stream's rules are wrong) and a fresh guest store per case.
    let evilServer: TestServer;
    let guestStore: TempStore;
    let script: (yielded: (e: object) => void) => Promise<void>;
    let evilPeers: PeerDirectory;
    const evilAcks: { sequence: bigint; response: DSFanoutResponse }[] = [];
    beforeAll(async () => {
      guestStore = await tempStore();
      const impl = {
        async *subscribe(req: { resumeAfter: bigint }) {
          const out: object[] = [];
          await script((e) => out.push(e));
          for (const e of out) if ((e as { sequence: bigint }).sequence > req.resumeAfter) yield e;
          await new Promise((r) => setTimeout(r, 60_000));
        },
        async acknowledge(req: { sequence: bigint; dsFanoutResponse: Uint8Array }) {
          evilAcks.push({ sequence: req.sequence, response: decodeDSFanoutResponse(req.dsFanoutResponse) });
          return {};
        },
      };
      evilServer = await startTestServer(ca, "b.example", recordingHandler(), { services: [serviceRoute(FanoutService, impl as never)], drainTimeoutMs: 100 });
      const file = join(ca.dir, "evil-peers.json");
      await writeFile(file, JSON.stringify([{ domain: "b.example", endpoint: evilServer.url, ca: "ca.pem", dsSignatureKey: b64(hub.fanoutPublicKey) }]));
      evilPeers = loadPeers(file);
    });
    afterAll(async () => {
      await evilServer?.close();
      await guestStore?.cleanup();
    });

    const evilConsumer = (extra: Partial<GuestConsumerOptions> = {}) =>
      new GuestConsumer({
        domain: "a.example",
        store: guestStore.store,
        tokens,
        peers: evilPeers,
        tls: { cert: aCert().cert, key: aCert().key },
        backoff: { initialMs: 20, maxMs: 50 },
        ...extra,
      });
    const freshGuest = async () => {
      await guestStore.cleanup();
      guestStore = await tempStore();
      const rec = (await guestDb.store.getClient(alice.clientId))!;
      await guestStore.store.apply({ ops: [{ kind: "putClient", clientId: rec.clientId, signaturePublicKey: rec.signaturePublicKey, authData: rec.authData }] });
    };
    const aliceGot = async () => {
      await pullInbox(guestStore.store, alice.clientId);
      return (await guestStore.store.read(clientQueue(alice.clientId), 0n, 10)).map((e) => e.payload);
    };
    const aliceHead = () => fanoutHead(hub, [{ clientId: alice.clientId, token: alice.token! }]);

    it("stream rule breaks (unknown, evicted or reused head ids; digest signatures not asked for or on whole entries): nothing from that entry on is processed", async () => {
      const head = aliceHead();
      const tails = await Promise.all([0, 1, 2, 3].map(async (i) => signedTail(hub, head, await source.next(`evil ${i}`))));
      const digestTail = await signedTail(hub, head, await source.next("evil digest"), headDigest(head));
      const whole = await signedFanoutRequest(hub, [{ clientId: alice.clientId, token: alice.token! }], await source.next("evil whole"));
      const cases: { name: string; entries: object[]; processed: bigint; error: RegExp; extra?: Partial<GuestConsumerOptions> }[] = [
        {
          name: "reference to a head never introduced",
          entries: [
            { sequence: 1n, headId: 1n, head, tail: tails[0] },
            { sequence: 2n, headId: 2n, tail: tails[1] },
          ],
          processed: 1n,
          error: /referred to head 2/,
        },
        {
          name: "an id introduced twice",
          entries: [
            { sequence: 1n, headId: 5n, head, tail: tails[0] },
            { sequence: 2n, headId: 5n, head, tail: tails[1] },
          ],
          processed: 1n,
          error: /introduced head 5 after head 5/,
        },
        {
          name: "a head older than the 16 kept",
          entries: [
            ...Array.from({ length: 17 }, (_, i) => ({ sequence: BigInt(i + 1), headId: BigInt(i + 1), head, tail: tails[i % 4] })),
            { sequence: 18n, headId: 1n, tail: tails[0] },
          ],
          processed: 17n,
          error: /referred to head 1,/,
        },
        {
          name: "a digest signature on a whole entry",
          entries: [
            { sequence: 1n, dsFanoutRequest: whole },
            { sequence: 2n, dsFanoutRequest: whole, headDigestSignature: true },
          ],
          processed: 1n,
          error: /over a head digest without a head by reference/,
        },
        {
          name: "a digest signature the guest did not ask for",
          entries: [{ sequence: 1n, headId: 1n, head, tail: digestTail, headDigestSignature: true }],
          processed: 0n,
          error: /although it was not asked to/,
          extra: { headDigestSignatures: false },
        },
      ];
      for (const k of cases) {
        await freshGuest();
        script = async (y) => k.entries.forEach(y);
        const c = evilConsumer(k.extra);
        c.start();
        await waitFor(() => c.status()[0]!.lastError !== undefined && k.error.test(c.status()[0]!.lastError!), 10_000, k.name);
        await c.stop();
        expect(await processedHighWater(guestStore.store, "b.example"), k.name).toBe(k.processed);
      }
    });

    it("entries that keep the rules but are wrong are refused one by one (and acknowledged), the right ones delivered", async () => {
      await freshGuest();
      const head = aliceHead();
      const otherHead = fanoutHead(hub, [{ clientId: alice.clientId, token: alice.token! }, { clientId: bob.clientId, token: bob.token! }]);
      const good = await source.next("digest ok");
      const cutMessage = await source.next("cut elsewhere");
      const cutWhole = await signedFanoutRequest(hub, [{ clientId: alice.clientId, token: alice.token! }], cutMessage);
      const cut = head.length + 3; // 3 bytes into mls_message: the same request, split where the hub should not have
      const entries = [
        // Signed over the digest of another head (a hub mixing up its sections).
        { sequence: 1n, headId: 1n, head, tail: await signedTail(hub, otherHead, await source.next("wrong digest"), headDigest(otherHead)), headDigestSignature: true },
        // A whole-request signature sent as a digest one.
        { sequence: 2n, headId: 1n, tail: await signedTail(hub, head, await source.next("wrong form")), headDigestSignature: true },
        // Right.
        { sequence: 3n, headId: 1n, tail: await signedTail(hub, head, good, headDigest(head)), headDigestSignature: true },
        // A cut that is not a head, with a whole-request signature: taken as head || tail.
        { sequence: 4n, headId: 2n, head: cutWhole.subarray(0, cut), tail: cutWhole.subarray(cut) },
        // The same cut signed over its digest: there is no head to take.
        { sequence: 5n, headId: 2n, tail: await signedTail(hub, cutWhole.subarray(0, cut), cutWhole.subarray(cut), headDigest(cutWhole.subarray(0, cut))), headDigestSignature: true },
      ];
      evilAcks.length = 0;
      const c = evilConsumer();
      script = async (y) => entries.forEach(y);
      c.start();
      await waitFor(async () => (await processedHighWater(guestStore.store, "b.example")) === 5n, 10_000, "all processed");
      // Stopping aborts an Acknowledge still on its way: wait for the last one first.
      await waitFor(() => evilAcks.some((a) => a.sequence === 5n), 10_000, "acknowledged");
      await c.stop();
      expect(same(await aliceGot(), [good, cutMessage])).toBe(true);
      const errors = evilAcks.flatMap((a) => (a.response.responseBody.responseType === "error" ? [[a.sequence, a.response.responseBody.error.code]] : []));
      expect(errors).toEqual([
        [1n, DSFanoutErrorCode.bad_signature],
        [2n, DSFanoutErrorCode.bad_signature],
        [5n, DSFanoutErrorCode.malformed],
      ]);
    });
  });
});
