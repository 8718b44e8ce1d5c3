// The hub's outbox at scale (issue 16, src/ds/fanout.ts): the recipient
// section of a group's DSFanoutRequests is built once per group state and
// domain and stored once, so an outbox entry holds the message alone (the
// FanoutService signs it as it streams it); what a guest reads is still the
// full signed DSFanoutRequest, byte for byte what signing it whole gives.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MimiMember } from "../../src/client/index.js";
import { signedFanoutRequest, wholeRequest } from "../../src/ds/fanout.js";
import { groupKey } from "../../src/ds/groups.js";
import type { PeerHubs } from "../../src/ds/peers.js";
import { verifyFanoutSignatureAsync } from "../../src/ds/hub-identity.js";
import { SqliteStore, outboxQueue } from "../../src/store/index.js";
import { decodeWith, dsFanoutRequestCodec, encodeMLSMessage, encodeWith, opaqueV } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
const remote: MimiMember[] = [];
let groupId: Uint8Array;

const remoteMember = async (name: string, domain: string) => {
  const m = await MimiMember.create({ clientId: `mimi://${domain}/u/${name}/d/1`, hub: f.hub });
  m.token = { token: randomBytes(16) };
  return m;
};

beforeAll(async () => {
  // b.example and c.example are this hub's peers (members of other domains are admitted only from peers).
  const peers: PeerHubs = { has: (d) => d === "b.example" || d === "c.example", submit: () => Promise.reject(new Error("not reached in these tests")) };
  f = await startHub("hub.example", {}, { peers });
  alice = await f.member("alice");
  for (let i = 0; i < 6; i++) remote.push(await remoteMember(`b${i}`, "b.example"));
  for (let i = 0; i < 4; i++) remote.push(await remoteMember(`c${i}`, "c.example"));
  groupId = await alice.createGroup(await f.hubSender());
  await alice.add(await Promise.all(remote.map(async (m) => (await m.generateKeyPackage()).publicPackage)));
});
afterAll(() => f?.close());

const db = () => (f.store as SqliteStore).database;
const prefixRows = () => Number(db().prepare("SELECT count(*) FROM entry_prefixes WHERE group_id = ?").pluck().get(groupKey(groupId)));

const readRequests = async (queue: string, after: bigint) =>
  Promise.all(
    (await f.store.read(queue, after, 1000)).map(async (e) => {
      // What a guest receives for the entry (the FanoutService signs entries stored unsigned as it streams them).
      const bytes = await wholeRequest(f.ds.context.hub, e);
      return { bytes, req: decodeWith(dsFanoutRequestCodec, bytes, "DSFanoutRequest") };
    }),
  );
const ids = (xs: readonly Uint8Array[]) => xs.map((r) => new TextDecoder().decode(r));

describe("outbox entries with a shared recipient section", () => {
  it("stores about the message's size per entry and one section per domain for the epoch; guests read the whole signed request", async () => {
    const outB = outboxQueue("b.example");
    const before = (await f.store.queueInfo(outB)).lastSeq;
    for (let i = 0; i < 5; i++) await alice.send(`hello ${i}`);
    const entries = await readRequests(outB, before);
    expect(entries.length).toBe(5);
    const bMembers = remote.filter((m) => m.clientId.includes("b.example"));
    let messageLength = 0;
    for (const { bytes, req } of entries) {
      expect(ids(req.recipientIds)).toEqual(bMembers.map((m) => m.clientId));
      expect(req.fanoutAuthTokens.map((t) => Buffer.from(t.token).toString("hex"))).toEqual(bMembers.map((m) => Buffer.from(m.token!.token).toString("hex")));
      const message = encodeMLSMessage(req.mlsMessage);
      messageLength = message.length;
      // Byte for byte what signing the whole request gives (Ed25519 is deterministic).
      const whole = await signedFanoutRequest(f.ds.context.hub, bMembers.map((m) => ({ clientId: m.clientId, token: m.token!.token })), message);
      expect(Buffer.from(bytes).equals(Buffer.from(whole))).toBe(true);
      const head = bytes.subarray(0, bytes.length - message.length - encodeWith(opaqueV, req.signature).length);
      expect(await verifyFanoutSignatureAsync(f.ds.context.hub.fanoutPublicKey, [head, message], req.signature)).toBe(true);
    }
    // What is stored per entry (a stored format: docs/storage.md): the MLSMessage as sent, byte for byte, not the recipients
    // nor a signature; the head is the entry prefix. The message is stored once for the hub's feed and every outbox.
    const stored = db()
      .prepare(
        "SELECT coalesce(p.data, e.payload) AS data, e.payload_id AS id FROM queue_entries e LEFT JOIN queue_payloads p ON p.id = e.payload_id WHERE e.queue = ? AND e.seq > ? ORDER BY e.seq",
      )
      .all(outB, before) as { data: Buffer; id: bigint | null }[];
    expect(stored.length).toBe(5);
    for (const [i, p] of stored.entries()) expect(p.data.equals(Buffer.from(encodeMLSMessage(entries[i]!.req.mlsMessage)))).toBe(true);
    for (const p of stored) expect(p.data.length).toBe(messageLength);
    for (const p of stored) {
      expect(p.id).not.toBeNull();
      const copies = db().prepare("SELECT count(*) FROM queue_payloads WHERE data = (SELECT data FROM queue_payloads WHERE id = ?)").pluck().get(p.id);
      expect(Number(copies)).toBe(1);
    }
    // One section per guest domain for this epoch, whatever the number of messages.
    expect(prefixRows()).toBe(2);
  });

  it("a sender of a guest domain gets its own section there (without it); after a commit the old sections go", async () => {
    const b0 = remote[0]!;
    const outB = outboxQueue("b.example");
    const outC = outboxQueue("c.example");
    // b0's Welcome went to its domain's outbox.
    const welcome = (await readRequests(outB, 0n)).find((e) => e.req.mlsMessage.wireformat === "mls_welcome" && ids(e.req.recipientIds).includes(b0.clientId));
    expect(welcome).toBeDefined();
    await b0.joinFromWelcome(encodeMLSMessage(welcome!.req.mlsMessage));
    const lastB = (await f.store.queueInfo(outB)).lastSeq;
    const lastC = (await f.store.queueInfo(outC)).lastSeq;
    await b0.send("from b0");
    const [toB] = await readRequests(outB, lastB);
    const [toC] = await readRequests(outC, lastC);
    expect(ids(toB!.req.recipientIds)).toEqual(remote.slice(1, 6).map((m) => m.clientId));
    expect(ids(toC!.req.recipientIds)).toEqual(remote.slice(6).map((m) => m.clientId));
    expect(prefixRows()).toBe(3); // b without b0, next to b and c

    // Everything acknowledged, a commit, its fanout acknowledged: nothing of the old epoch is kept.
    for (const q of [outB, outC]) await f.store.ack(q, (await f.store.queueInfo(q)).lastSeq);
    await alice.update();
    for (const q of [outB, outC]) await f.store.ack(q, (await f.store.queueInfo(q)).lastSeq);
    await f.store.purgeExpired();
    expect(prefixRows()).toBe(0);
    await alice.send("new epoch");
    expect(prefixRows()).toBe(2);
  });
});
