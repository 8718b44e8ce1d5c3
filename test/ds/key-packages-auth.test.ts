// Issue 13 item 7 and the Low "fetch oracle", as an attacker tries them: an
// anonymous caller draining a user's KeyPackages, one registered client (or
// several) fetching as fast as it can, a captured signed request replayed,
// forged or stale registered_client signatures, a peer asking for clients of
// a third domain; and registered and unregistered identifiers answering
// alike. The victim keeps what the limits promise: every refused fetch
// consumes nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildDSRequest,
  createDSTransport,
  DSClient,
  DSRequestError,
  MimiMember,
  type DSTransport,
  type RequestAuth,
} from "../../src/client/index.js";
import type { PeerHubs } from "../../src/ds/peers.js";
import { decodeDSResponse, DSErrorCode, encodeDSRequest } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

const PEER = "peer.example";
const peers: PeerHubs = { has: (d) => d === PEER, submit: () => Promise.reject(new Error("not reached")) };
const PER_TARGET = 5;
const PER_REQUESTER = 8;

let f: HubFixture;
let victim: MimiMember;
let attacker: MimiMember;
let peerTransport: DSTransport;

beforeAll(async () => {
  f = await startHub(
    "hub.example",
    { policy: { keyPackages: { perTarget: { limit: PER_TARGET, windowMs: 3_600_000 }, perRequester: { limit: PER_REQUESTER, windowMs: 3_600_000 }, perPeer: { limit: 6, windowMs: 3_600_000 } } } },
    { peers, caDomains: [PEER] },
  );
  victim = await f.member("victim");
  attacker = await f.member("attacker");
  await victim.publishKeyPackages(19, { lastResort: true });
  const cert = f.ca.domain(PEER);
  peerTransport = createDSTransport({ baseUrl: f.server.url, ca: f.ca.ca, cert: cert.cert, key: cert.key });
});
afterAll(async () => {
  peerTransport?.close();
  await f?.close();
});

const stock = () => f.store.countKeyPackages(victim.clientId);
const code = (e: unknown) => (e instanceof DSRequestError ? e.codeName : String(e));

describe("key_packages authorization and limits", () => {
  it("refuses anonymous fetches (draft 9.9) and hands out nothing", async () => {
    const before = await stock();
    for (let i = 0; i < 25; i++) expect(code(await f.hub.keyPackages([victim.clientId]).catch((e: unknown) => e))).toBe("authentication_failed");
    expect(await stock()).toBe(before);
  });

  it("stops one registered client draining another's packages at the per-target limit", async () => {
    const before = await stock();
    const results = await Promise.all(Array.from({ length: 25 }, () => f.hub.keyPackages([victim.clientId], [1], attacker.registeredAuth()).then(() => "ok", code)));
    expect(results.filter((r) => r === "ok")).toHaveLength(PER_TARGET);
    expect(results.filter((r) => r !== "ok").every((r) => r === "rate_limited")).toBe(true);
    expect(await stock()).toBe(before - PER_TARGET);
  });

  it("holds the per-target limit against many requesters, and the per-requester limit across targets", async () => {
    const sybils = await Promise.all(Array.from({ length: 4 }, (_, i) => f.member(`sybil-${i}`)));
    const before = await stock();
    for (const s of sybils) expect(code(await f.hub.keyPackages([victim.clientId], [1], s.registeredAuth()).catch((e: unknown) => e))).toBe("rate_limited");
    expect(await stock()).toBe(before);
    // A requester's own budget: PER_REQUESTER KeyPackages an hour, whoever they belong to.
    const spender = await f.member("spender");
    const others = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
      const m = await f.member(`target-${i}`);
      await m.publishKeyPackages(2);
      return m;
    }));
    const outcomes: string[] = [];
    for (const o of others) for (let k = 0; k < 2; k++) outcomes.push(await f.hub.keyPackages([o.clientId], [1], spender.registeredAuth()).then(() => "ok", code));
    expect(outcomes.slice(0, PER_REQUESTER).every((r) => r === "ok")).toBe(true);
    expect(outcomes.slice(PER_REQUESTER).every((r) => r === "rate_limited")).toBe(true);
    // The drain attempts above spent the attacker's budget too (refused fetches count).
    expect(code(await f.hub.keyPackages([others[5]!.clientId], [1], attacker.registeredAuth()).catch((e: unknown) => e))).toBe("rate_limited");
  });

  it("refuses a captured registered_client request replayed, and forged, stale or foreign signatures", async () => {
    const asker = await f.member("asker");
    const owner = await f.member("owner");
    await owner.publishKeyPackages(3);
    const body = { requestType: "key_packages" as const, keyPackagesRequest: { clientIdentifiers: [new TextEncoder().encode(owner.clientId)], cipherSuites: [1] } };
    const submit = async (auth: RequestAuth) => decodeDSResponse(await f.hub.submit(encodeDSRequest(await buildDSRequest(body, auth)))).responseBody;
    const captured = encodeDSRequest(await buildDSRequest(body, asker.registeredAuth()));
    expect(decodeDSResponse(await f.hub.submit(captured)).responseBody.responseType).toBe("key_packages");
    const again = decodeDSResponse(await f.hub.submit(captured)).responseBody;
    expect(again.responseType === "error" && again.error.code).toBe(DSErrorCode.authentication_failed);
    expect(await f.store.countKeyPackages(owner.clientId)).toBe(2);

    const errorOf = (b: Awaited<ReturnType<typeof submit>>) => (b.responseType === "error" ? b.error.code : 0);
    const impostor = await MimiMember.create({ clientId: asker.clientId, hub: f.hub });
    expect(errorOf(await submit(impostor.registeredAuth()))).toBe(DSErrorCode.authentication_failed);
    const late = await f.member("late-asker"); // has never signed: its first timestamp is what `now` says
    const stale = { ...(late.registeredAuth() as Extract<RequestAuth, { kind: "registered" }>), now: () => Date.now() - 10 * 60_000 };
    expect(errorOf(await submit(stale))).toBe(DSErrorCode.authentication_failed);
    const ghost = await f.member("ghost", { register: false });
    expect(errorOf(await submit(ghost.registeredAuth()))).toBe(DSErrorCode.authentication_failed);
    const foreign = await MimiMember.create({ clientId: `mimi://${PEER}/u/p/d/1`, hub: f.hub });
    expect(errorOf(await submit(foreign.registeredAuth()))).toBe(DSErrorCode.authentication_failed);
    expect(await f.store.countKeyPackages(owner.clientId)).toBe(2);
  });

  it("answers a peer DS over mutual TLS for clients of this domain, rate-limited per peer; not for a third domain", async () => {
    const owner = await f.member("peer-target");
    await owner.publishKeyPackages(10);
    const asPeer = new DSClient(peerTransport);
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) outcomes.push(await asPeer.keyPackages([owner.clientId], [1]).then(() => "ok", code));
    expect(outcomes).toEqual(["ok", "ok", "ok", "ok", "ok", "rate_limited", "rate_limited", "rate_limited"]);
    expect(code(await asPeer.keyPackages(["mimi://third.example/u/x/d/1"]).catch((e: unknown) => e))).toBe("invalid_request");
  });

  it("answers registered and unregistered identifiers alike (no oracle)", async () => {
    const asker = await f.member("oracle-asker");
    const empty = await f.member("no-packages"); // registered, nothing published
    const answerFor = async (id: string) => {
      const e = (await f.hub.keyPackages([id], [1], asker.registeredAuth()).catch((x: unknown) => x)) as DSRequestError;
      return { code: e.code, rpc: e.rpcCode, message: e.message.replace(id, "<id>") };
    };
    const registered = await answerFor(empty.clientId);
    const unknown = await answerFor(`mimi://${f.domain}/u/nobody/d/1`);
    expect(registered.code).toBe(DSErrorCode.no_key_packages);
    expect(unknown).toEqual(registered);
  });
});
