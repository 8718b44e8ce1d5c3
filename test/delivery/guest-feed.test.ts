// Guest-side delivery at scale (issue 16): fanout stored once per request in
// the guest feed of (hub, group), recipient checks once per recipient list,
// and a consumer with several requests in flight. Real hub FanoutService and
// guest GuestConsumers over mutual TLS, real SQLite stores, real ts-mls
// messages and FanoutAuthTokens.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createClientService,
  createFanoutService,
  FanoutTokenKeys,
  GuestConsumer,
  loadPeers,
  parsePeers,
  processFanoutRequest,
  processedHighWater,
  rotateFanoutToken,
  updateBlocks,
  type ClientServiceHandle,
  type FanoutServiceHandle,
  type GuestConsumerOptions,
  type GuestDeps,
  type PeerDirectory,
} from "../../src/delivery/index.js";
import { FanoutProcessor, guestFeedId } from "../../src/delivery/guest.js";
import { RecipientChecks } from "../../src/delivery/recipients.js";
import { signedFanoutRequest, type Recipient } from "../../src/ds/fanout.js";
import { HubIdentity } from "../../src/ds/hub-identity.js";
import { clientQueue, groupFeed, outboxQueue } from "../../src/store/index.js";
import { DSFanoutErrorCode, type DSFanoutResponse } from "../../src/wire/index.js";
import type { DSTransport } from "../../src/client/transport.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { pullInbox } from "../helpers/inbox.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";
import { b64, dsTransport, MessageSource, tempStore, TestClient, waitFor, type TempStore } from "./helpers.js";
import { prng } from "../helpers/prng.js";

let ca: DevCa;
let hubDb: TempStore;
let guestDb: TempStore;
let hub: HubIdentity;
let hubServer: TestServer;
let guestServer: TestServer;
let fanout: FanoutServiceHandle;
let clients: ClientServiceHandle;
let guestTransport: DSTransport;
let peers: PeerDirectory;
const tokens = FanoutTokenKeys.generate();
const people: TestClient[] = [];

beforeAll(async () => {
  ca = await makeDevCa(["a.example", "b.example"]);
  hubDb = await tempStore();
  guestDb = await tempStore();
  hub = await HubIdentity.open("b.example");
  fanout = createFanoutService({ store: hubDb.store, hub, pageSize: 7 });
  hubServer = await startTestServer(ca, "b.example", recordingHandler(), { services: [fanout.route], drainTimeoutMs: 500 });
  clients = createClientService({ domain: "a.example", store: guestDb.store, tokens, registration: { open: true } });
  guestServer = await startTestServer(ca, "a.example", recordingHandler(), { services: [clients.route], drainTimeoutMs: 500 });
  guestTransport = dsTransport(guestServer.url, ca.ca);
  const peersFile = join(ca.dir, "peers.json");
  await writeFile(peersFile, JSON.stringify([{ domain: "b.example", endpoint: hubServer.url, ca: "ca.pem", dsSignatureKey: b64(hub.fanoutPublicKey) }]));
  peers = loadPeers(peersFile);
  for (let i = 0; i < 8; i++) {
    const c = await TestClient.create(`p${i}:1@a.example`, guestTransport);
    await c.register();
    people.push(c);
  }
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
});

function consumer(extra: Partial<GuestConsumerOptions> = {}): GuestConsumer {
  const a = ca.domain("a.example");
  return new GuestConsumer({ domain: "a.example", store: guestDb.store, tokens, peers, tls: { cert: a.cert, key: a.key }, backoff: { initialMs: 50, maxMs: 500 }, ...extra });
}

const key = (b: Uint8Array): string => b64(b);
const errorOf = (r: DSFanoutResponse) => (r.responseBody.responseType === "error" ? r.responseBody.error : undefined);

describe("guest delivery by feed through the consumer", () => {
  it("random recipient lists over several groups, two consumers on one store, one stopped mid-stream: each client gets exactly what its lists and tokens allow, once, in the hub's order per group (seeded)", async () => {
    const random = prng(16);
    const groups = [await MessageSource.create(), await MessageSource.create(), await MessageSource.create()];
    /** Per client: expected messages, by group (undefined: no group id, straight to its queue). */
    const expected = new Map(people.map((p) => [p.clientId, new Map<string, string[]>()]));
    const groupOf = new Map<string, string>();
    const expect1 = (clientId: string, group: string, m: Uint8Array) => {
      const byGroup = expected.get(clientId)!;
      byGroup.set(group, [...(byGroup.get(group) ?? []), key(m)]);
    };
    // Per group a current list that drifts: most messages reuse it (the cached case).
    const lists = groups.map(() => people.filter(() => random() < 0.6));
    const total = 150;
    let last = 0n;
    for (let i = 0; i < total; i++) {
      const g = Math.floor(random() * groups.length);
      const roll = random();
      if (roll < 0.2) {
        // A changed list: someone joins or leaves.
        const p = people[Math.floor(random() * people.length)]!;
        lists[g] = lists[g]!.includes(p) ? lists[g]!.filter((x) => x !== p) : [...lists[g]!, p];
      }
      const recipients: Recipient[] = lists[g]!.map((p) => ({ clientId: p.clientId, token: p.token! }));
      // Now and then a forged token (refused for that recipient only), a duplicate or a stranger.
      if (roll > 0.9 && recipients.length > 0) {
        const forged = new Uint8Array(recipients[0]!.token!);
        forged[30]! ^= 1;
        recipients[0] = { clientId: recipients[0]!.clientId, token: forged };
      } else if (roll > 0.85) recipients.push({ clientId: "stranger:1@a.example", token: people[0]!.token! });
      else if (roll > 0.8 && recipients.length > 0) recipients.push(recipients[0]!);
      let message: Uint8Array;
      let group: string;
      if (random() < 0.08) {
        // No group id in clear (a KeyPackage here, as a Welcome would be): straight to the queues.
        message = (await people[0]!.keyPackage()).bytes;
        group = "";
      } else {
        message = await groups[g]!.next(`g${g} m${i}`);
        group = key(groups[g]!.groupId);
      }
      groupOf.set(key(message), group);
      const bytes = await signedFanoutRequest(hub, recipients, message);
      last = (await hubDb.store.apply({ ops: [{ kind: "append", queue: outboxQueue("a.example"), payload: bytes }] })).appended[0]!.seq;
      const seen = new Set<string>();
      for (const [k, r] of recipients.entries()) {
        if (seen.has(r.clientId)) continue;
        seen.add(r.clientId);
        const p = people.find((x) => x.clientId === r.clientId);
        const forged = roll > 0.9 && k === 0;
        if (p !== undefined && !forged) expect1(p.clientId, group, message);
      }
    }

    // One consumer, stopped after part of the stream (entries in flight and unacknowledged), a
    // second one and a third on the same store at once (as two instances would be).
    const c1 = consumer({ inFlight: 8, batch: 4 });
    c1.start();
    await waitFor(async () => (await processedHighWater(guestDb.store, "b.example")) >= last / 3n, 20_000, "a third processed");
    await c1.stop();
    const c2 = consumer({ inFlight: 5, batch: 3 });
    const c3 = consumer({ inFlight: 16, batch: 64 });
    c2.start();
    c3.start();
    await waitFor(async () => (await hubDb.store.queueInfo(outboxQueue("a.example"))).length === 0, 30_000, "outbox drained");
    await c2.stop();
    await c3.stop();
    expect(await processedHighWater(guestDb.store, "b.example")).toBe(last);

    for (const p of people) {
      await pullInbox(guestDb.store, p.clientId);
      const entries = await guestDb.store.read(clientQueue(p.clientId), 0n, 10_000);
      // One gap-free sequence per client.
      entries.forEach((e, i) => expect(e.seq).toBe(entries[0]!.seq + BigInt(i)));
      const byGroup = new Map<string, string[]>();
      for (const e of entries) {
        const k = groupOf.get(key(e.payload));
        expect(k, "a message that was not sent").toBeDefined();
        byGroup.set(k!, [...(byGroup.get(k!) ?? []), key(e.payload)]);
      }
      // Exactly the expected messages, each once, in the hub's order within each group.
      expect(Object.fromEntries(byGroup), p.clientId).toEqual(Object.fromEntries(expected.get(p.clientId)!));
      if (entries.length > 0) await guestDb.store.ack(clientQueue(p.clientId), entries.at(-1)!.seq);
    }
    // One stored entry per request of a group, whatever the number of recipients.
    for (const g of groups) {
      const feed = groupFeed(guestFeedId("b.example", g.groupId));
      const sent = [...expected.values()].some((m) => (m.get(key(g.groupId)) ?? []).length > 0);
      if (sent) expect((await guestDb.store.queueInfo(feed)).lastSeq).toBeGreaterThan(0n);
    }
  });
});

describe("recipient checks once per recipient list", () => {
  let hubC: HubIdentity;
  let direct: PeerDirectory;
  let seq = 0n;
  beforeAll(async () => {
    hubC = await HubIdentity.open("c.example");
    direct = parsePeers([{ domain: "c.example", endpoint: "https://localhost:1", ca: ca.caPath, dsSignatureKey: b64(hubC.fanoutPublicKey) }]);
  });
  const depsWith = (extra: Partial<GuestDeps> = {}): GuestDeps => ({ domain: "a.example", store: guestDb.store, tokens, peers: direct, ...extra });
  const names = (ids: readonly Uint8Array[]) => ids.map((i) => new TextDecoder().decode(i));

  it("a list seen before is not verified again; a changed list is, for the recipients that changed", async () => {
    const checks = new RecipientChecks();
    const deps = depsWith({ recipientChecks: checks });
    const [alice, bob, carl] = people;
    const source = await MessageSource.create();
    const two = [
      { clientId: alice!.clientId, token: alice!.token! },
      { clientId: bob!.clientId, token: bob!.token! },
    ];
    const send = async (list: Recipient[]) => processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, list, await source.next(`m${seq}`)));
    expect((await send(two)).delivered).toEqual([alice!.clientId, bob!.clientId]);
    expect(checks.stats.verified).toBe(2);
    for (let i = 0; i < 5; i++) expect((await send(two)).delivered).toEqual([alice!.clientId, bob!.clientId]);
    expect(checks.stats.verified).toBe(2);
    expect(checks.stats.hits).toBe(5);

    // A changed list (one more, with another client's token): checked again, only the new one verified.
    const r = await send([...two, { clientId: carl!.clientId, token: alice!.token! }]);
    expect(errorOf(r.response)?.code).toBe(DSFanoutErrorCode.invalid_token);
    expect(names(errorOf(r.response)!.rejectedRecipients)).toEqual([carl!.clientId]);
    expect(r.delivered).toEqual([alice!.clientId, bob!.clientId]);
    expect(checks.stats.verified).toBe(3);
    // Bob's entry replaced by a forged token: refused although Bob was accepted in this group before.
    const forged = new Uint8Array(bob!.token!);
    forged[25]! ^= 0x10;
    const r2 = await send([two[0]!, { clientId: bob!.clientId, token: forged }]);
    expect(names(errorOf(r2.response)!.rejectedRecipients)).toEqual([bob!.clientId]);
    expect(r2.delivered).toEqual([alice!.clientId]);
    // The same list for another group is checked on its own (blocks are per group).
    const other = await MessageSource.create();
    const r3 = await processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, two, await other.next("x")));
    expect(r3.delivered).toEqual([alice!.clientId, bob!.clientId]);
    expect(checks.stats.verified).toBe(6);
  });

  it("a token revoked after its list was cached is refused, here and at another instance on the same store; a grace period's end too", async () => {
    const dave = await TestClient.create("dave:1@a.example", guestTransport);
    await dave.register();
    const erin = await TestClient.create("erin:1@a.example", guestTransport);
    await erin.register();
    let now = Date.now();
    const here = depsWith({ recipientChecks: new RecipientChecks(), now: () => now });
    const there = depsWith({ recipientChecks: new RecipientChecks(), now: () => now });
    const source = await MessageSource.create();
    const list = [
      { clientId: dave.clientId, token: dave.token! },
      { clientId: erin.clientId, token: erin.token! },
    ];
    const bytes = async () => signedFanoutRequest(hubC, list, await source.next("r"));
    for (const d of [here, there]) expect((await processFanoutRequest(d, "c.example", ++seq, await bytes())).delivered).toEqual([dave.clientId, erin.clientId]);

    // Dave's tokens revoked at once (operator action through the store): both instances refuse the cached list's token.
    await rotateFanoutToken(guestDb.store, tokens, dave.clientId, { revokeGraceMs: 0, now: now - 1 });
    for (const d of [here, there]) {
      const r = await processFanoutRequest(d, "c.example", ++seq, await bytes());
      expect(errorOf(r.response)?.code).toBe(DSFanoutErrorCode.invalid_token);
      expect(names(errorOf(r.response)!.rejectedRecipients)).toEqual([dave.clientId]);
      expect(r.delivered).toEqual([erin.clientId]);
    }

    // Erin's revoked with a 10 s grace: accepted (and cached) during it, refused once it ended.
    await rotateFanoutToken(guestDb.store, tokens, erin.clientId, { revokeGraceMs: 10_000, now });
    expect((await processFanoutRequest(here, "c.example", ++seq, await bytes())).delivered).toEqual([erin.clientId]);
    expect((await processFanoutRequest(here, "c.example", ++seq, await bytes())).delivered).toEqual([erin.clientId]);
    now += 10_001;
    const late = await processFanoutRequest(here, "c.example", ++seq, await bytes());
    expect(names(errorOf(late.response)!.rejectedRecipients).sort()).toEqual([dave.clientId, erin.clientId].sort());
    expect(late.delivered).toEqual([]);
  });

  it("a block set after the list was cached refuses the fanout; lifting it accepts it again", async () => {
    const fay = await TestClient.create("fay:1@a.example", guestTransport);
    await fay.register();
    const deps = depsWith({ recipientChecks: new RecipientChecks() });
    const source = await MessageSource.create();
    const list = [{ clientId: fay.clientId, token: fay.token! }];
    const send = async () => processFanoutRequest(deps, "c.example", ++seq, await signedFanoutRequest(hubC, list, await source.next("b")));
    expect((await send()).delivered).toEqual([fay.clientId]);
    await updateBlocks(guestDb.store, fay.clientId, { blockGroups: [source.groupId] });
    expect(errorOf((await send()).response)?.code).toBe(DSFanoutErrorCode.blocked);
    await updateBlocks(guestDb.store, fay.clientId, { unblockGroups: [source.groupId], blockDomains: ["c.example"] });
    expect(errorOf((await send()).response)?.code).toBe(DSFanoutErrorCode.blocked);
    await updateBlocks(guestDb.store, fay.clientId, { unblockDomains: ["c.example"] });
    expect((await send()).delivered).toEqual([fay.clientId]);
  });

  it("two instances writing one hub's stream in turns keep each feed's members exact (the set compare-and-set)", async () => {
    const source = await MessageSource.create();
    const one = new FanoutProcessor(depsWith());
    const two = new FanoutProcessor(depsWith());
    const [a, b, c] = people;
    const setA = [a!, b!].map((p) => ({ clientId: p.clientId, token: p.token! }));
    const setB = [b!, c!].map((p) => ({ clientId: p.clientId, token: p.token! }));
    const feed = guestFeedId("c.example", source.groupId);
    const before = await Promise.all(people.map(async (p) => (await pullInbox(guestDb.store, p.clientId), (await guestDb.store.queueInfo(clientQueue(p.clientId))).lastSeq)));
    const write = async (proc: FanoutProcessor, list: Recipient[], text: string) => {
      const m = await source.next(text);
      const prepared = await proc.prepare("c.example", ++seq, await signedFanoutRequest(hubC, list, m));
      return (await proc.write("c.example", [prepared])).outcomes[0]!;
    };
    await write(one, setA, "1 to a, b"); // instance one: the feed follows {a, b}
    await write(two, setB, "2 to b, c"); // instance two moves it to {b, c}
    await write(one, setA, "3 to a, b"); // instance one still believes {a, b}: its write must notice
    await write(two, setA, "4 to a, b");
    expect((await guestDb.store.feedMembers(feed)).sort()).toEqual([a!.clientId, b!.clientId].sort());
    const got = async (p: TestClient, i: number) => {
      await pullInbox(guestDb.store, p.clientId);
      return (await guestDb.store.read(clientQueue(p.clientId), before[i]!, 100)).length;
    };
    expect(await got(a!, 0)).toBe(3);
    expect(await got(b!, 1)).toBe(4);
    expect(await got(c!, 2)).toBe(1);
  });

  it("writes one feed entry per request however many recipients, and several requests per transaction", async () => {
    const source = await MessageSource.create();
    const processor = new FanoutProcessor(depsWith());
    const list = people.map((p) => ({ clientId: p.clientId, token: p.token! }));
    const prepared = [];
    for (let i = 0; i < 5; i++) prepared.push(await processor.prepare("c.example", ++seq, await signedFanoutRequest(hubC, list, await source.next(`x${i}`))));
    const feed = groupFeed(guestFeedId("c.example", source.groupId));
    const { outcomes } = await processor.write("c.example", prepared);
    expect(outcomes.map((o) => o.delivered.length)).toEqual([8, 8, 8, 8, 8]);
    expect((await guestDb.store.queueInfo(feed)).lastSeq).toBe(5n);
    expect((await guestDb.store.feedMembers(guestFeedId("c.example", source.groupId))).length).toBe(8);
    // Written again (a resumed stream): duplicates, nothing stored twice.
    const again = await processor.write("c.example", prepared);
    expect(again.outcomes.every((o) => o.duplicate)).toBe(true);
    expect((await guestDb.store.queueInfo(feed)).lastSeq).toBe(5n);
  });
});
