// Issue 13 items 2, 6, 9 (credentials) and 10, as an attacker tries them
// against a hub with default settings: posing as a registered client of the
// hub inside a group (forged KeyPackages, external joins under its name, a
// removed member coming back), putting Welcomes and messages into a local
// client's queue without a FanoutAuthToken of this DS, forged members of
// domains that are not peers, oversized credentials. Each refused request
// changes nothing: same epoch and tree at the hub, nothing queued for the
// victim. A seeded driver then mixes such attempts with ordinary traffic and
// checks after every step that each local leaf at the hub carries its
// client's registered key.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDSTransport, DSClient, DSRequestError, MimiMember } from "../../src/client/index.js";
import { localClientDirectory, updateBlocks } from "../../src/delivery/index.js";
import { proposeAddition } from "../../src/ds/admin.js";
import { DSFailure } from "../../src/ds/errors.js";
import { groupKey } from "../../src/ds/groups.js";
import type { PeerHubs } from "../../src/ds/peers.js";
import { domainOf, epochOf, members, treeHash } from "../../src/mls/index.js";
import { clientQueue } from "../../src/store/port.js";
import { DSErrorCode, makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { pullInbox } from "../helpers/inbox.js";
import { join } from "node:path";
import { createDeliveryService } from "../../src/ds/service.js";
import { openStore } from "../../src/store/index.js";
import { startTestServer } from "../helpers/server.js";
import { startHub, type HubFixture } from "./fixture.js";

const PEER = "peer.example";
const peers: PeerHubs = {
  has: (d) => d === PEER,
  submit: () => Promise.reject(new Error("not reached in these tests")),
};

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let victim: MimiMember;
let groupId: Uint8Array;

beforeAll(async () => {
  f = await startHub("hub.example", {}, { peers });
  alice = await f.member("alice");
  bob = await f.member("bob");
  victim = await f.member("victim");
  groupId = await alice.createGroup(await f.hubSender());
  await alice.add([(await bob.generateKeyPackage()).publicPackage]);
  await f.deliver(bob);
});
afterAll(() => f?.close());

/** Entries in the client's queue not yet acknowledged (after pulling its group feeds). */
async function queued(clientId: string): Promise<number> {
  await pullInbox(f.store, clientId);
  return (await f.store.queueInfo(clientQueue(clientId))).length;
}

async function hubView(id = groupId): Promise<{ epoch: bigint; tree: string }> {
  const g = (await f.hosted(id))!;
  return { epoch: epochOf(g.state), tree: Buffer.from(treeHash(g.state)).toString("hex") };
}

/** The request fails with `code` and leaves the group and the victim's queue as they were. */
async function refused(code: number, attempt: () => Promise<unknown>, pattern?: RegExp, id = groupId): Promise<void> {
  const before = await hubView(id);
  const queuedBefore = await queued(victim.clientId);
  const err = await attempt().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "the request was accepted").toBeInstanceOf(DSRequestError);
  expect((err as DSRequestError).code, (err as Error).message).toBe(code);
  if (pattern !== undefined) expect((err as Error).message).toMatch(pattern);
  expect(await hubView(id)).toEqual(before);
  expect(await queued(victim.clientId)).toBe(queuedBefore);
}

/** Someone holding another key who claims `clientId`. */
const impostorOf = (clientId: string) => MimiMember.create({ clientId, hub: f.hub });

describe("posing as a registered client (item 2)", () => {
  it("refuses add_clients with a forged KeyPackage naming a registered client, even with its genuine token", async () => {
    const impostor = await impostorOf(victim.clientId);
    impostor.token = victim.token; // copied: the token is not what makes the leaf genuine
    const forged = (await impostor.generateKeyPackage()).publicPackage;
    await refused(DSErrorCode.permission_denied, () => alice.add([forged]), /signature key other than the one that client registered/);
  });

  it("refuses an external join under a registered client's name with another key (resync-only group, and an open one)", async () => {
    const impostor = await impostorOf(victim.clientId);
    await refused(DSErrorCode.permission_denied, () => impostor.externalJoin(groupId), /replacing its own leaf/);
    // In a group open to external joins the registered key still decides.
    const opener = await f.member("opener");
    const openId = await opener.createGroup(await f.hubSender(), [makeExternalJoinPolicyExtension("open")]);
    const again = await impostorOf(victim.clientId);
    await refused(DSErrorCode.permission_denied, () => again.externalJoin(openId), /registered/, openId);
    // The genuine client may join the open group.
    const twin = await MimiMember.create({ clientId: victim.clientId, hub: f.hub, signatureKeyPair: victim.signatureKeyPair });
    twin.token = victim.token;
    await twin.externalJoin(openId);
    expect([...members((await f.hosted(openId))!.state)].map((m) => m.clientId)).toContain(victim.clientId);
    // (The victim's queue gets nothing from its own join; leave it empty for the tests below.)
    expect(await queued(victim.clientId)).toBe(0);
  });

  it("refuses create_group by a client of this domain that is not registered, or with another key than registered", async () => {
    // alice's group state is needed again below: build the attempts with fresh members.
    const ghost = await f.member("ghost-creator", { register: false });
    ghost.token = { token: randomBytes(69) };
    const e1 = (await ghost.createGroup(await f.hubSender()).catch((e: unknown) => e)) as DSRequestError;
    expect(e1.code).toBe(DSErrorCode.unknown_client);
    const impostor = await impostorOf(victim.clientId);
    impostor.token = victim.token;
    const e2 = (await impostor.createGroup(await f.hubSender()).catch((e: unknown) => e)) as DSRequestError;
    expect(e2.code).toBe(DSErrorCode.permission_denied);
    expect(await queued(victim.clientId)).toBe(0);
  });
});

describe("external joins (item 2)", () => {
  let carol: MimiMember;
  let gid: Uint8Array;
  beforeAll(async () => {
    carol = await f.member("carol");
    const dave = await f.member("dave");
    gid = await carol.createGroup(await f.hubSender());
    await carol.add([(await dave.generateKeyPackage()).publicPackage]);
    await f.deliver(dave);
    await carol.remove([dave.clientId]);
    (globalThis as { dave?: MimiMember }).dave = dave;
  });

  it("a removed member cannot come straight back by external commit", async () => {
    const dave = (globalThis as { dave?: MimiMember }).dave!;
    await refused(DSErrorCode.permission_denied, () => dave.externalJoin(gid), /replacing its own leaf/, gid);
  });

  it("a member that lost its state resyncs its own leaf (same key) by external commit", async () => {
    const erin = await f.member("erin");
    await carol.add([(await erin.generateKeyPackage()).publicPackage]);
    await f.deliver(erin);
    const before = await hubView(gid);
    const erin2 = await MimiMember.create({ clientId: erin.clientId, hub: f.hub, signatureKeyPair: erin.signatureKeyPair });
    erin2.token = erin.token;
    await erin2.externalJoin(gid, true);
    expect((await hubView(gid)).epoch).toBe(before.epoch + 1n);
    await f.deliver(carol);
    // Not by a "resync" that removes erin's leaf (erin's key) but names carol (the engine refuses it first).
    const impostor = await MimiMember.create({ clientId: carol.clientId, hub: f.hub, signatureKeyPair: erin.signatureKeyPair });
    await refused(DSErrorCode.invalid_message, () => impostor.externalJoin(gid, true), /removes a different client/, gid);
  });
});

describe("queue injection (item 6)", () => {
  it("refuses a KeyPackage of an unregistered client of this domain (no token this DS issued)", async () => {
    const ghost = await f.member("ghost", { register: false });
    ghost.token = { token: randomBytes(69) };
    const kp = (await ghost.generateKeyPackage()).publicPackage;
    await refused(DSErrorCode.unknown_client, () => alice.add([kp]), /not a registered client/);
    expect(await queued(ghost.clientId)).toBe(0);
  });

  it("refuses the registered client's own KeyPackage when its token was not issued by this DS", async () => {
    const genuine = victim.token;
    victim.token = { token: randomBytes(genuine!.token.length) };
    const kp = (await victim.generateKeyPackage()).publicPackage;
    victim.token = genuine;
    await refused(DSErrorCode.invalid_fanout_token, () => alice.add([kp]));
    // A token this DS issued, but to another client.
    victim.token = bob.token;
    const kp2 = (await victim.generateKeyPackage()).publicPackage;
    victim.token = genuine;
    await refused(DSErrorCode.invalid_fanout_token, () => alice.add([kp2]));
  });

  it("refuses adding a client that blocks the group or the hub (blocked)", async () => {
    await updateBlocks(f.store, victim.clientId, { blockGroups: [groupId] });
    const kp = (await victim.generateKeyPackage()).publicPackage;
    await refused(DSErrorCode.blocked, () => alice.add([kp]));
    await updateBlocks(f.store, victim.clientId, { unblockGroups: [groupId], blockDomains: [f.domain] });
    await refused(DSErrorCode.blocked, () => alice.add([kp]));
    await updateBlocks(f.store, victim.clientId, { unblockDomains: [f.domain] });
    // Unblocked, the same genuine KeyPackage goes in and the Welcome reaches the victim.
    await alice.add([kp]);
    expect(await f.deliver(victim)).toEqual([expect.objectContaining({ kind: "joined" })]);
    await f.deliver(bob);
  });

  it("refuses update_client replacing the sender's token with one this DS did not issue", async () => {
    await refused(DSErrorCode.invalid_fanout_token, () => bob.update({ token: randomBytes(69) }));
    await bob.update(bob.token);
    await f.deliver(alice);
    await f.deliver(victim);
  });
});

describe("the hub's own Add proposals", () => {
  it("refuses to propose adding a forged KeyPackage of a registered client (the proposal could never be committed)", async () => {
    const impostor = await impostorOf(victim.clientId);
    impostor.token = victim.token;
    const forged = (await impostor.generateKeyPackage()).publicPackage;
    const epoch = (await hubView()).epoch;
    const err = await proposeAddition(f.ds.context, groupId, forged).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DSFailure);
    expect((err as DSFailure).code).toBe(DSErrorCode.permission_denied);
    expect(await f.store.listProposals(groupKey(groupId), epoch)).toEqual([]);
  });
});

describe("members of other domains (item 10) and credential size (item 9)", () => {
  it("refuses members of a domain that is neither this one nor a peer; accepts a peer's", async () => {
    const stranger = await MimiMember.create({ clientId: "mimi://evil.example/u/x/d/1", hub: f.hub });
    stranger.token = { token: randomBytes(16) };
    await refused(DSErrorCode.permission_denied, async () => alice.add([(await stranger.generateKeyPackage()).publicPackage]), /neither hub.example nor a peer/);
    const friend = await MimiMember.create({ clientId: `mimi://${PEER}/u/y/d/1`, hub: f.hub });
    friend.token = { token: randomBytes(16) };
    const before = await hubView();
    await alice.add([(await friend.generateKeyPackage()).publicPackage]);
    expect((await hubView()).epoch).toBe(before.epoch + 1n);
    for (const m of [bob, victim]) await f.deliver(m);
  });

  it("refuses a credential larger than maxCredentialBytes (too_large)", async () => {
    const big = await MimiMember.create({ clientId: `mimi://${PEER}/u/${"x".repeat(20_000)}/d/1`, hub: f.hub });
    big.token = { token: randomBytes(16) };
    await refused(DSErrorCode.too_large, async () => alice.add([(await big.generateKeyPackage()).publicPackage]), /credential/);
  });
});

describe("seeded attempts among ordinary traffic", () => {
  it("every local leaf at the hub carries its client's registered key, whatever the attacker tries", async () => {
    let seed = 0x13;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const carol = await f.member("carol2");
    const gid = await carol.createGroup(await f.hubSender());
    const roster: MimiMember[] = [carol];
    let accepted = 0;
    let refusedCount = 0;
    for (let step = 0; step < 24; step++) {
      const actor = roster[rand(roster.length)]!;
      const kind = rand(6);
      const target = [alice, bob, victim][rand(3)]!;
      const attempt = async (): Promise<"legit" | "attack"> => {
        switch (kind) {
          case 0: {
            // legit: a fresh registered client joins by add
            const m = await f.member(`n${step}`);
            await actor.add([(await m.generateKeyPackage()).publicPackage]);
            await f.deliver(m);
            roster.push(m);
            return "legit";
          }
          case 1:
            await actor.send(`m${step}`);
            return "legit";
          case 2: {
            const impostor = await impostorOf(target.clientId);
            impostor.token = target.token;
            await actor.add([(await impostor.generateKeyPackage()).publicPackage]);
            return "attack";
          }
          case 3: {
            const impostor = await impostorOf(target.clientId);
            await impostor.externalJoin(gid);
            return "attack";
          }
          case 4: {
            const ghost = await f.member(`ghost${step}`, { register: false });
            ghost.token = { token: randomBytes(69) };
            await actor.add([(await ghost.generateKeyPackage()).publicPackage]);
            return "attack";
          }
          default: {
            const stranger = await MimiMember.create({ clientId: `mimi://s${step}.example/u/x/d/1`, hub: f.hub });
            stranger.token = { token: randomBytes(16) };
            await actor.add([(await stranger.generateKeyPackage()).publicPackage]);
            return "attack";
          }
        }
      };
      const before = await hubView(gid);
      const outcome = await attempt().then(
        (k) => ({ k, err: undefined as unknown }),
        (err: unknown) => ({ k: kind <= 1 ? "legit" : "attack", err }),
      );
      if (outcome.k === "attack") {
        expect(outcome.err, `step ${step}: attack ${kind} accepted`).toBeInstanceOf(DSRequestError);
        expect(await hubView(gid)).toEqual(before);
        refusedCount++;
      } else {
        expect(outcome.err, `step ${step}`).toBeUndefined();
        accepted++;
      }
      for (const m of roster) if (m !== actor) await f.deliver(m);
      for (const m of members((await f.hosted(gid))!.state)) {
        if (domainOf(m.clientId) !== f.domain) continue;
        const reg = await f.store.getClient(m.clientId);
        expect(reg, m.clientId).toBeDefined();
        expect(Buffer.from(reg!.signaturePublicKey).equals(Buffer.from(m.signaturePublicKey)), m.clientId).toBe(true);
      }
    }
    expect(accepted).toBeGreaterThan(0);
    expect(refusedCount).toBeGreaterThan(0);
  });
});

describe("groups stored before the rules", () => {
  it("a member of a non-peer domain that is already in may update its leaf; a new one is refused", async () => {
    // Made while the hub allowed foreign members; then judged by a DS with the default policy on the same store.
    const old = await startHub("old.example", { policy: { foreignMembers: "allow" } });
    const store2 = await openStore(join(old.dir, "ds.sqlite"));
    const ds2 = await createDeliveryService({ domain: old.domain, store: store2, localClients: localClientDirectory({ store: store2, tokens: old.tokens, domain: old.domain }) });
    const server2 = await startTestServer(old.ca, old.domain, ds2.handler, { hubInfo: ds2.hubInfo });
    const t2 = createDSTransport({ baseUrl: server2.url, ca: old.ca.ca });
    try {
      const owner = await old.member("owner");
      const gid = await owner.createGroup(await old.hubSender());
      const stranger = await MimiMember.create({ clientId: "mimi://far.example/u/s/d/1", hub: old.hub });
      stranger.token = { token: randomBytes(16) };
      const welcome = await owner.add([(await stranger.generateKeyPackage()).publicPackage]);
      await stranger.joinFromWelcome(welcome);

      const strict = new DSClient(t2);
      (stranger as { hub: DSClient }).hub = strict;
      (owner as { hub: DSClient }).hub = strict;
      const before = (await ds2.context.groups.get(groupKey(gid)))!.epoch;
      await stranger.update();
      expect((await ds2.context.groups.get(groupKey(gid)))!.epoch).toBe(before + 1n);
      await pullInbox(old.store, owner.clientId);
      const [commit] = await old.store.read(clientQueue(owner.clientId), 0n, 10);
      expect(await owner.processIncoming(commit!.payload)).toMatchObject({ kind: "commit" });
      const another = await MimiMember.create({ clientId: "mimi://far.example/u/t/d/1", hub: strict });
      another.token = { token: randomBytes(16) };
      const err = (await owner.add([(await another.generateKeyPackage()).publicPackage]).catch((e: unknown) => e)) as DSRequestError;
      expect(err.code).toBe(DSErrorCode.permission_denied);
    } finally {
      t2.close();
      await server2.close();
      await store2.close();
      await old.close();
    }
  });
});
