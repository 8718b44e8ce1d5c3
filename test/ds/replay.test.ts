// Issue 13 item 5: the same signed send_message request, submitted again as
// an attacker (or a client retrying) would, is accepted once: a replay
// answers ok and is not fanned out again, within the accepted epoch window,
// after commits, concurrently, and after the DS restarts on its store. A
// seeded driver submits each of many messages one to four times in random
// order and checks every member receives each exactly once, in order.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildDSRequest, createDSTransport, DSClient, type MimiMember, type RequestAuth } from "../../src/client/index.js";
import { localClientDirectory } from "../../src/delivery/index.js";
import { clientSignatureKey, sentMessageKey } from "../../src/ds/replay.js";
import { createDeliveryService } from "../../src/ds/service.js";
import { openStore } from "../../src/store/index.js";
import { decodeDSResponse, DSErrorCode, encodeDSRequest } from "../../src/wire/index.js";
import { startTestServer } from "../helpers/server.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let carol: MimiMember;

beforeAll(async () => {
  f = await startHub();
  alice = await f.member("alice");
  bob = await f.member("bob");
  carol = await f.member("carol");
  await alice.createGroup(await f.hubSender());
  await alice.add([(await bob.generateKeyPackage()).publicPackage, (await carol.generateKeyPackage()).publicPackage]);
  await f.deliver(bob);
  await f.deliver(carol);
});
afterAll(() => f?.close());

const auth = (m: MimiMember): RequestAuth => ({
  kind: "member",
  senderIndex: m.state!.privatePath.leafIndex,
  signaturePrivateKey: m.signatureKeyPair.signKey,
  signature: m.cs.signature,
});

/** A signed send_message request as bytes (what an attacker captures). */
async function signedSend(m: MimiMember, text: string): Promise<Uint8Array> {
  const { message, newState } = await m.prepareSend(text);
  m.state = newState;
  return encodeDSRequest(await buildDSRequest({ requestType: "send_message", sendMessageRequest: { applicationMessage: message } }, auth(m)));
}

const answer = async (hub: DSClient, bytes: Uint8Array) => decodeDSResponse(await hub.submit(bytes)).responseBody;
const texts = async (m: MimiMember) => (await f.deliver(m)).flatMap((r) => (r.kind === "application" ? [r.text] : [r.kind]));

describe("send_message replays", () => {
  it("keeps its accept-once keys stable (stored format: SHA-256 of the <V> label and the bytes)", () => {
    expect(Buffer.from(sentMessageKey(Uint8Array.of(1, 2, 3))).toString("hex")).toBe("a5c5884efdfbd557358079de4161c8dc95887e7ac117fc441e0fda4504b983fa");
    expect(Buffer.from(clientSignatureKey(Uint8Array.of(1, 2, 3))).toString("hex")).toBe("d68a7f5d770e2b4b020f1c04c2f13125aad4f236817267b27598901c98c4633e");
  });

  it("accepts the same signed request once: five submissions, one delivery; ok every time", async () => {
    const bytes = await signedSend(alice, "once");
    for (let i = 0; i < 5; i++) expect((await answer(f.hub, bytes)).responseType).toBe("ok");
    expect(await texts(bob)).toEqual(["once"]);
    expect(await texts(carol)).toEqual(["once"]);
  });

  it("still refuses to fan it out again after commits within the accepted window, then answers wrong_epoch", async () => {
    const bytes = await signedSend(bob, "before commits");
    expect((await answer(f.hub, bytes)).responseType).toBe("ok");
    await alice.update();
    expect((await answer(f.hub, bytes)).responseType).toBe("ok");
    await alice.update();
    expect((await answer(f.hub, bytes)).responseType).toBe("ok");
    expect(await texts(carol)).toEqual(["before commits", "commit", "commit"]);
    await f.deliver(bob);
    await alice.update();
    const late = await answer(f.hub, bytes);
    expect(late.responseType === "error" && late.error.code).toBe(DSErrorCode.wrong_epoch);
    expect(await texts(carol)).toEqual(["commit"]);
    expect(await texts(alice)).toEqual(["before commits"]);
    await f.deliver(bob);
  });

  it("of concurrent identical submissions exactly one is fanned out", async () => {
    const bytes = await signedSend(carol, "raced");
    const answers = await Promise.all(Array.from({ length: 8 }, () => answer(f.hub, bytes)));
    expect(answers.every((a) => a.responseType === "ok")).toBe(true);
    expect(await texts(alice)).toEqual(["raced"]);
    expect(await texts(bob)).toEqual(["raced"]);
    expect(await texts(carol)).toEqual([]);
  });

  it("remembers across a restart (a second DS on the same store, nothing in memory)", async () => {
    const bytes = await signedSend(alice, "before restart");
    expect((await answer(f.hub, bytes)).responseType).toBe("ok");
    const store2 = await openStore(join(f.dir, "ds.sqlite"));
    const ds2 = await createDeliveryService({ domain: f.domain, store: store2, localClients: localClientDirectory({ store: store2, tokens: f.tokens, domain: f.domain }) });
    const server2 = await startTestServer(f.ca, f.domain, ds2.handler, { hubInfo: ds2.hubInfo });
    const t2 = createDSTransport({ baseUrl: server2.url, ca: f.ca.ca });
    try {
      expect((await answer(new DSClient(t2), bytes)).responseType).toBe("ok");
    } finally {
      t2.close();
      await server2.close();
      await store2.close();
    }
    expect(await texts(bob)).toEqual(["before restart"]);
    expect(await texts(carol)).toEqual(["before restart"]);
  });

  it("seeded: each of 30 messages submitted 1 to 4 times in random order reaches every member exactly once, in order", async () => {
    let seed = 5;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const senders = [alice, bob, carol];
    const sent: { from: MimiMember; text: string; bytes: Uint8Array }[] = [];
    for (let i = 0; i < 30; i++) {
      const from = senders[rand(3)]!;
      sent.push({ from, text: `s${i}`, bytes: await signedSend(from, `s${i}`) });
    }
    // Submit in order of creation (a sender's generations must arrive in order for its
    // receivers' MLS only when they are processed; the DS does not care), each
    // followed by replays of random earlier ones, some concurrently.
    for (const [i, s] of sent.entries()) {
      expect((await answer(f.hub, s.bytes)).responseType).toBe("ok");
      const replays = Array.from({ length: rand(4) }, () => sent[rand(i + 1)]!.bytes);
      const answers = await Promise.all(replays.map((b) => answer(f.hub, b)));
      expect(answers.every((a) => a.responseType === "ok")).toBe(true);
    }
    for (const m of senders) {
      const expected = sent.filter((s) => s.from !== m).map((s) => s.text);
      expect(await texts(m), m.clientId).toEqual(expected);
    }
  });

  it("a replay is still checked: a tampered copy fails authentication and is not recorded", async () => {
    const bytes = await signedSend(bob, "tampered");
    const bad = new Uint8Array(bytes);
    bad[bad.length - 1]! ^= 1; // the client_signature's last byte
    const a = await answer(f.hub, bad);
    expect(a.responseType === "error" && a.error.code).toBe(DSErrorCode.authentication_failed);
    expect((await answer(f.hub, bytes)).responseType).toBe("ok");
    expect(await texts(alice)).toEqual(["tampered"]);
    await f.deliver(carol);
  });
});
