// The rfc9420 client policy as an attacker sees it: what it relaxes (tokens,
// ds_protocol_version, unsigned requests that carry their own MLS signature)
// and what it does not (a forged MLS signature, a bad client_signature, a
// foreign DS protocol version, a hub without the policy, a guest DS without it).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MLSMessage } from "ts-mls";
import { anonymous, buildDSRequest, DSRequestError, type MimiMember } from "../../src/client/index.js";
import { FanoutTokenKeys, parsePeers, processFanoutRequest, type GuestDeps } from "../../src/delivery/index.js";
import { encodeClientAuthData, newClientAuthData } from "../../src/delivery/tokens.js";
import { signedFanoutRequest } from "../../src/ds/fanout.js";
import { HubIdentity } from "../../src/ds/hub-identity.js";
import { clientQueue } from "../../src/store/port.js";
import { DSErrorCode, DSFanoutErrorCode, encodeDSRequest } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "../ds/fixture.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { pullInbox } from "../helpers/inbox.js";
import { MessageSource, tempStore, b64, type TempStore } from "../delivery/helpers.js";

const codeOf = (e: unknown): number | undefined => (e instanceof DSRequestError ? e.code : undefined);

describe("hub under rfc9420", () => {
  let f: HubFixture;
  let strict: HubFixture;
  beforeAll(async () => {
    f = await startHub("rfc.example", { clientPolicy: "rfc9420" });
    strict = await startHub("strict.example");
  });
  afterAll(async () => {
    await f?.close();
    await strict?.close();
  });

  async function group(h: HubFixture): Promise<{ alice: MimiMember; bob: MimiMember; groupId: Uint8Array }> {
    const alice = await h.member(`alice${Math.random()}`);
    const bob = await h.member(`bob${Math.random()}`);
    const groupId = await alice.createGroup(await h.hubSender());
    await alice.add([(await bob.generateKeyPackage()).publicPackage]);
    await h.deliver(bob);
    return { alice, bob, groupId };
  }

  it("an anonymous commit is attributed to the leaf that signed it; one whose sender leaf is not the signer's is refused and changes nothing", async () => {
    const { alice, bob, groupId } = await group(f);
    const p = await alice.prepareRemove([]);
    const m = p.groupUpdate.commit as MLSMessage & { wireformat: "mls_public_message" };
    // The same commit claiming bob's leaf: its FramedContent signature no longer verifies.
    const forged = { ...m, publicMessage: { ...m.publicMessage, content: { ...m.publicMessage.content, sender: { senderType: "member" as const, leafIndex: bob.leafIndex } } } };
    const e1 = await f.hub.updateClient({ ...p.groupUpdate, commit: forged }, undefined, anonymous).catch((e: unknown) => e);
    expect(codeOf(e1)).toBe(DSErrorCode.authentication_failed); // the engine: the FramedContent signature does not verify
    // A sender leaf nobody holds.
    const ghost = { ...m, publicMessage: { ...m.publicMessage, content: { ...m.publicMessage.content, sender: { senderType: "member" as const, leafIndex: 9 } } } };
    const e2 = await f.hub.updateClient({ ...p.groupUpdate, commit: ghost }, undefined, anonymous).catch((e: unknown) => e);
    expect(codeOf(e2)).toBe(DSErrorCode.permission_denied);
    expect((await f.hosted(groupId))!.epoch).toBe(1n);
    // The genuine commit, anonymous, is accepted and reaches bob.
    await f.hub.updateClient(p.groupUpdate, undefined, anonymous);
    alice.state = p.newState;
    expect((await f.deliver(bob)).map((r) => r.kind)).toEqual(["commit"]);
  });

  it("a client_signature that does not verify is still refused (no fallback to anonymous)", async () => {
    const { alice, groupId } = await group(f);
    const p = await alice.prepareRemove([]);
    const other = await f.member("mallory");
    const e = await f.hub
      .updateClient(p.groupUpdate, undefined, { kind: "member", senderIndex: alice.leafIndex, signaturePrivateKey: other.signatureKeyPair.signKey, signature: other.cs.signature })
      .catch((err: unknown) => err);
    expect(codeOf(e)).toBe(DSErrorCode.authentication_failed);
    expect((await f.hosted(groupId))!.epoch).toBe(1n);
  });

  it("an anonymous application message goes to every member, its sender too; a -05 hub refuses it", async () => {
    const { alice, bob } = await group(f);
    const msg = await alice.prepareSend("anon");
    alice.state = msg.newState;
    await f.hub.sendMessage(msg.message, anonymous);
    expect(await f.deliver(bob)).toEqual([expect.objectContaining({ text: "anon" })]);
    expect(await f.queueLength(alice.clientId)).toBeGreaterThan(0);

    const s = await group(strict);
    const m2 = await s.alice.prepareSend("anon");
    expect(codeOf(await strict.hub.sendMessage(m2.message, anonymous).catch((e: unknown) => e))).toBe(DSErrorCode.authentication_failed);
    const p = await s.alice.prepareRemove([]);
    expect(codeOf(await strict.hub.updateClient(p.groupUpdate, undefined, anonymous).catch((e: unknown) => e))).toBe(DSErrorCode.authentication_failed);
  });

  it("an anonymous application message proxied by a peer DS is taken only when that domain has a member in the group", async () => {
    const { alice, groupId } = await group(f);
    const msg = await alice.prepareSend("via a peer");
    alice.state = msg.newState;
    const bytes = encodeDSRequest(await buildDSRequest({ requestType: "send_message", sendMessageRequest: { applicationMessage: msg.message } }, anonymous));
    const stranger = await f.ds.handler.handle(bytes, { peerDomain: "elsewhere.example" });
    expect(stranger.error?.code).toBe(DSErrorCode.permission_denied);
    expect(stranger.error?.message).toMatch(/elsewhere\.example has no member in this group/);
    // A peer with a member (here: the hub's own domain as seen from a proxy) is taken.
    const member = await f.ds.handler.handle(bytes, { peerDomain: "rfc.example" });
    expect(member.error).toBeUndefined();
    expect((await f.hosted(groupId))!.epoch).toBe(1n);
  });

  it("groups without ds_protocol_version and KeyPackages without FanoutAuth are taken; tokens that are present are still kept", async () => {
    const alice = await f.member("tok-alice");
    const groupId = await alice.createGroup(await f.hubSender(), { dsProtocolVersion: false });
    const bob = await f.member("tok-bob");
    const carol = await f.member("tok-carol");
    carol.token = undefined; // a KeyPackage without FanoutAuth
    await alice.add([(await bob.generateKeyPackage()).publicPackage, (await carol.generateKeyPackage()).publicPackage]);
    const g = (await f.hosted(groupId))!;
    expect(g.tokens.has(bob.clientId)).toBe(true);
    expect(g.tokens.has(carol.clientId)).toBe(false);
    expect(await f.queueLength(carol.clientId)).toBe(1); // its Welcome
    // A -05 hub refuses both.
    const s = await strict.member("s-alice");
    await expect(s.createGroup(await strict.hubSender(), { dsProtocolVersion: false })).rejects.toThrow(/ds_protocol_version/);
  });
});

describe("guest DS: token-less fanout", () => {
  let ca: DevCa;
  let db: TempStore;
  let hubC: HubIdentity;
  let source: MessageSource;
  const tokens = FanoutTokenKeys.generate();
  let seq = 0n;
  beforeAll(async () => {
    ca = await makeDevCa(["a.example"]);
    db = await tempStore();
    hubC = await HubIdentity.open("c.example");
    source = await MessageSource.create();
    await db.store.apply({ ops: [{ kind: "putClient", clientId: "cc:1@a.example", signaturePublicKey: new Uint8Array(32).fill(1), authData: encodeClientAuthData(newClientAuthData(1, Date.now())) }] });
  });
  afterAll(async () => {
    await db?.cleanup();
    await ca?.cleanup();
  });

  const deps = (acceptTokenless: boolean): GuestDeps => ({
    domain: "a.example",
    store: db.store,
    tokens,
    peers: parsePeers([{ domain: "c.example", endpoint: "https://localhost:1", ca: ca.caPath, dsSignatureKey: b64(hubC.fanoutPublicKey) }]),
    acceptTokenless,
  });
  const codeOfFanout = (r: Awaited<ReturnType<typeof processFanoutRequest>>) => (r.response.responseBody.responseType === "error" ? r.response.responseBody.error.code : 0);

  it("delivers an empty token to a registered client only with acceptTokenless; unknown clients and wrong tokens stay refused", async () => {
    const m = await source.next("tokenless");
    const bytes = await signedFanoutRequest(hubC, [{ clientId: "cc:1@a.example" }], m);
    expect(codeOfFanout(await processFanoutRequest(deps(false), "c.example", ++seq, bytes))).toBe(DSFanoutErrorCode.invalid_token);
    const ok = await processFanoutRequest(deps(true), "c.example", ++seq, bytes);
    expect(ok.delivered).toEqual(["cc:1@a.example"]);
    await pullInbox(db.store, "cc:1@a.example");
    expect((await db.store.queueInfo(clientQueue("cc:1@a.example"))).length).toBe(1);
    const unknown = await signedFanoutRequest(hubC, [{ clientId: "nobody:1@a.example" }], m);
    expect(codeOfFanout(await processFanoutRequest(deps(true), "c.example", ++seq, unknown))).toBe(DSFanoutErrorCode.unknown_recipient);
    const wrong = await signedFanoutRequest(hubC, [{ clientId: "cc:1@a.example", token: new Uint8Array(61).fill(7) }], m);
    expect(codeOfFanout(await processFanoutRequest(deps(true), "c.example", ++seq, wrong))).toBe(DSFanoutErrorCode.invalid_token);
  });
});

describe("serve --client-policy", () => {
  it("defaults to mimi, takes rfc9420 (flag or MIMI_DS_CLIENT_POLICY), refuses anything else", async () => {
    const { parseServeArgs, ConfigError } = await import("../../src/cli/config.js");
    const base = ["--domain", "a.example", "--tls-cert", "c.pem", "--tls-key", "k.pem"];
    expect(parseServeArgs(base, {}).clientPolicy).toBe("mimi");
    expect(parseServeArgs([...base, "--client-policy", "rfc9420"], {}).clientPolicy).toBe("rfc9420");
    expect(parseServeArgs(base, { MIMI_DS_CLIENT_POLICY: "rfc9420" }).clientPolicy).toBe("rfc9420");
    expect(() => parseServeArgs([...base, "--client-policy", "open"], {})).toThrow(ConfigError);
  });
});
