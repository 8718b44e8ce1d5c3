// CoreCrypto (Wire, on OpenMLS) and ts-mls clients in one group on a hub in
// this process (real dispatcher, SQLite, TLS), under the rfc9420 client policy.
// CoreCrypto's MLS bytes reach the DS unchanged (asReceived checks it); the DS
// protocol framing CoreCrypto cannot make (signed DSRequests) is bridged in
// the open by test/interop/corecrypto.ts (dsSubmitter: anonymous requests).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MimiMember } from "../../src/client/index.js";
import { proposeAddition, proposeRemoval } from "../../src/ds/admin.js";
import { groupInfoMessage, members } from "../../src/mls/index.js";
import { decodeKeyPackageBytes, DSErrorCode, encodeKeyPackageBytes, encodeMLSMessage, readDSProtocolVersion, readExternalSenders } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "../ds/fixture.js";
import { CoreCryptoClient, dsSubmitter, sendFromCoreCrypto, StoreInbox, userDeviceId, type CoreCryptoCommit } from "./corecrypto.js";
import { prng } from "../helpers/prng.js";

const DOMAIN = "hub.example";
let f: HubFixture;
const started = Date.now();

beforeAll(async () => {
  // CoreCrypto cannot prove possession of its signature key to its DS (it never exposes it), so its
  // leaves cannot be bound to a registration, and its groups cannot carry the external_join_policy
  // extension (it cannot list it): a hub for such clients relaxes both, visibly (docs/interop.md).
  f = await startHub(DOMAIN, { clientPolicy: "rfc9420", policy: { localClients: "unchecked", externalJoins: "open" } });
  inboxes = new StoreInbox(f.store);
});
afterAll(async () => {
  await f?.close();
  console.log(`CoreCrypto in-process suite: ${Date.now() - started} ms`);
});

let inboxes: StoreInbox;
/** A CoreCrypto client reads its queue at the hub: Welcomes join, everything else is decrypted. */
const ccDeliver = (c: CoreCryptoClient, groupId: Uint8Array, options: { tolerate?: boolean } = {}) => inboxes.deliver(c, groupId, options);

async function tsMember(name: string, options: Parameters<HubFixture["member"]>[1] = {}): Promise<MimiMember> {
  return f.member(name, { clientId: userDeviceId(DOMAIN), ...options });
}

async function expectInSync(groupId: Uint8Array, ts: MimiMember[], cc: CoreCryptoClient[]) {
  const g = (await f.hosted(groupId))!;
  const epoch = g.state.groupContext.epoch;
  for (const m of ts) expect(m.epoch, m.clientId).toBe(epoch);
  for (const c of cc) expect(await c.epoch(groupId), c.clientId).toBe(epoch);
  const th = Buffer.from(g.state.groupContext.treeHash).toString("hex");
  for (const m of ts) expect(Buffer.from(m.treeHash).toString("hex"), m.clientId).toBe(th);
  const ids = [...members(g.state)].map((m) => m.clientId).sort();
  for (const c of cc) expect(await c.members(groupId)).toEqual(ids);
}

const kinds = (rs: { kind: string }[]) => rs.map((r) => r.kind);

describe("CoreCrypto and ts-mls members through the hub", () => {
  it("a ts-mls group: CoreCrypto joins from the Welcome, messages both ways, commits update/add/remove, hub Remove, external joins both ways", async () => {
    const alice = await tsMember("alice");
    const cc1 = await CoreCryptoClient.create({ domain: DOMAIN });
    const sent: CoreCryptoCommit[] = [];
    cc1.submit = dsSubmitter(f.hub, sent);

    // alice creates the group without ds_protocol_version (CoreCrypto cannot list it) and adds cc1 with its own KeyPackage.
    const groupId = await alice.createGroup(await f.hubSender(), { dsProtocolVersion: false });
    await alice.add([decodeKeyPackageBytes(await cc1.keyPackage())]);
    expect(kinds(await ccDeliver(cc1, groupId))).toEqual(["joined"]);
    await expectInSync(groupId, [alice], [cc1]);

    // Application messages both ways.
    await alice.send("hello CoreCrypto");
    expect(await ccDeliver(cc1, groupId)).toEqual([expect.objectContaining({ kind: "application", text: "hello CoreCrypto", sender: alice.clientId })]);
    await sendFromCoreCrypto(f.hub, cc1, groupId, "hello ts-mls");
    expect(await f.deliver(alice)).toEqual([expect.objectContaining({ kind: "application", text: "hello ts-mls" })]);
    expect(kinds(await ccDeliver(cc1, groupId))).toEqual(["own"]);

    // CoreCrypto commits: update, add of two ts-mls clients (without path), remove.
    await cc1.update(groupId);
    expect(kinds(await f.deliver(alice))).toEqual(["commit"]);
    await expectInSync(groupId, [alice], [cc1]);

    const bob = await tsMember("bob");
    const carol = await tsMember("carol");
    await cc1.add(groupId, [encodeKeyPackageBytes((await bob.generateKeyPackage()).publicPackage), encodeKeyPackageBytes((await carol.generateKeyPackage()).publicPackage)]);
    expect(kinds(await f.deliver(alice))).toEqual(["commit"]);
    expect(kinds(await f.deliver(bob))).toEqual(["joined"]);
    expect(kinds(await f.deliver(carol))).toEqual(["joined"]);
    await expectInSync(groupId, [alice, bob, carol], [cc1]);

    await cc1.remove(groupId, [carol.clientId]);
    expect(kinds(await f.deliver(alice))).toEqual(["commit"]);
    expect(kinds(await f.deliver(bob))).toEqual(["commit"]);
    expect(await f.deliver(carol)).toEqual([{ kind: "commit", epoch: expect.any(BigInt), removed: true }]);
    await expectInSync(groupId, [alice, bob], [cc1]);
    // The hub's GroupInfo is CoreCrypto's, byte for byte (the hub computed the same GroupContext).
    expect(Buffer.from(groupInfoMessage((await f.hosted(groupId))!.state)!).equals(Buffer.from(sent.at(-1)!.groupInfo))).toBe(true);

    // A ts-mls client joins by external commit from the GroupInfo of a CoreCrypto commit.
    const dave = await tsMember("dave");
    await dave.externalJoin(groupId);
    for (const m of [alice, bob]) expect(kinds(await f.deliver(m))).toEqual(["commit"]);
    expect(kinds(await ccDeliver(cc1, groupId))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob, dave], [cc1]);

    // The hub proposes to remove bob (external sender); CoreCrypto commits the proposal by reference.
    await proposeRemoval(f.ds.context, groupId, bob.clientId);
    expect(kinds(await ccDeliver(cc1, groupId))).toEqual(["proposal"]);
    for (const m of [alice, bob, dave]) expect(kinds(await f.deliver(m))).toEqual(["proposal"]);
    await cc1.commitPending(groupId);
    for (const m of [alice, dave]) expect(kinds(await f.deliver(m))).toEqual(["commit"]);
    expect(await f.deliver(bob)).toEqual([expect.objectContaining({ removed: true })]);
    await expectInSync(groupId, [alice, dave], [cc1]);

    // A CoreCrypto client joins by external commit from the hub's GroupInfo (the last commit was CoreCrypto's: it has the tree).
    const cc2 = await CoreCryptoClient.create({ domain: DOMAIN });
    cc2.submit = dsSubmitter(f.hub, sent);
    const info = await f.hub.externalCommitInfo(groupId);
    await cc2.joinByExternalCommit(groupId, encodeMLSMessage(info.groupInfo));
    for (const m of [alice, dave]) expect(kinds(await f.deliver(m))).toEqual(["commit"]);
    expect(kinds(await ccDeliver(cc1, groupId))).toEqual(["commit"]);
    await expectInSync(groupId, [alice, dave], [cc1, cc2]);
  });

  it("a CoreCrypto-created group: unmodified KeyPackages, the hub as external sender, ts-mls members added by CoreCrypto and adding CoreCrypto", async () => {
    const hubKey = (await f.hubSender()).signaturePublicKey;
    const cc = await CoreCryptoClient.create({ domain: DOMAIN });
    const sent: CoreCryptoCommit[] = [];
    cc.submit = dsSubmitter(f.hub, sent);
    const groupId = await f.hub.requestGroupId();
    await cc.createConversation(groupId, hubKey);
    await cc.firstCommit(groupId); // create_group with its GroupInfo (epoch 1)
    const hosted = (await f.hosted(groupId))!;
    expect(hosted.state.groupContext.epoch).toBe(1n);
    expect(readDSProtocolVersion(hosted.state.groupContext.extensions)).toBeUndefined();
    expect(readExternalSenders(hosted.state.groupContext.extensions)?.map((e) => Buffer.from(e.signaturePublicKey).toString("hex"))).toEqual([Buffer.from(hubKey).toString("hex")]);

    const alice = await tsMember("alice2");
    await cc.add(groupId, [encodeKeyPackageBytes((await alice.generateKeyPackage()).publicPackage)]);
    expect(kinds(await f.deliver(alice))).toEqual(["joined"]);
    await expectInSync(groupId, [alice], [cc]);

    const cc2 = await CoreCryptoClient.create({ domain: DOMAIN });
    cc2.submit = dsSubmitter(f.hub, sent);
    await alice.add([decodeKeyPackageBytes(await cc2.keyPackage())]);
    expect(kinds(await ccDeliver(cc, groupId))).toEqual(["commit"]);
    expect(kinds(await ccDeliver(cc2, groupId))).toEqual(["joined"]);
    await expectInSync(groupId, [alice], [cc, cc2]);

    await sendFromCoreCrypto(f.hub, cc2, groupId, "from cc2");
    expect(await f.deliver(alice)).toEqual([expect.objectContaining({ text: "from cc2" })]);
    expect(await ccDeliver(cc, groupId)).toEqual([expect.objectContaining({ kind: "application", text: "from cc2", sender: cc2.clientId })]);
    expect(kinds(await ccDeliver(cc2, groupId))).toEqual(["own"]);

    // The hub removes cc2; the other CoreCrypto client commits it.
    await proposeRemoval(f.ds.context, groupId, cc2.clientId);
    expect(kinds(await ccDeliver(cc, groupId))).toEqual(["proposal"]);
    expect(kinds(await f.deliver(alice))).toEqual(["proposal"]);
    expect(kinds(await ccDeliver(cc2, groupId))).toEqual(["proposal"]);
    await cc.commitPending(groupId);
    expect(kinds(await f.deliver(alice))).toEqual(["commit"]);
    expect(await ccDeliver(cc2, groupId)).toEqual([{ kind: "commit", active: false }]);
    await expectInSync(groupId, [alice], [cc]);
  });

  it("ids: CoreCrypto joins next to a mimi:// or alice:1@ member but cannot decrypt their messages; <uuid>:<hex>@domain works", async () => {
    for (const [clientId, ok] of [
      [`mimi://${DOMAIN}/u/ids-alice/d/1`, false],
      [`ids-bob:1@${DOMAIN}`, false], // the user part must be a UUID, the device part hex
      [userDeviceId(DOMAIN), true],
    ] as const) {
      const alice = await f.member("x", { clientId });
      const groupId = await alice.createGroup(await f.hubSender(), { dsProtocolVersion: false });
      const cc = await CoreCryptoClient.create({ domain: DOMAIN });
      await alice.add([decodeKeyPackageBytes(await cc.keyPackage())]);
      expect(kinds(await ccDeliver(cc, groupId))).toEqual(["joined"]);
      await alice.send("hi");
      const got = await ccDeliver(cc, groupId).catch((e: unknown) => e);
      if (ok) expect(got).toEqual([expect.objectContaining({ text: "hi", sender: clientId })]);
      else expect(String(got)).toMatch(/not of the format `<user-id:device-id@domain>`/);
    }
  });

  it("a hub Add proposal, which CoreCrypto would refuse (OpenMLS takes only Remove from external senders), is not made in its groups: nothing blocks its commits", async () => {
    // DS-initiated proposals that members cannot commit must not block a group (docs/protocol.md, "Pending
    // proposals" 4-5): the hub proposes Add only in MIMI groups (ds_protocol_version), and a pending
    // proposal no commit took stops being required after the grace period (test/ds/epoch-log.test.ts).
    const alice = await tsMember("add-alice");
    const groupId = await alice.createGroup(await f.hubSender(), { dsProtocolVersion: false });
    const cc = await CoreCryptoClient.create({ domain: DOMAIN });
    cc.submit = dsSubmitter(f.hub);
    await alice.add([decodeKeyPackageBytes(await cc.keyPackage())]);
    expect(kinds(await ccDeliver(cc, groupId))).toEqual(["joined"]);
    const erin = await tsMember("add-erin");
    await expect(proposeAddition(f.ds.context, groupId, (await erin.generateKeyPackage()).publicPackage)).rejects.toMatchObject({ code: DSErrorCode.permission_denied });
    // CoreCrypto commits on; ts-mls follows.
    await cc.update(groupId);
    expect(kinds(await f.deliver(alice))).toEqual(["commit"]);
    await expectInSync(groupId, [alice], [cc]);
  });

  it("CoreCrypto joins by external commit after a ts-mls commit only when its GroupInfo carries the tree (groupInfoRatchetTree)", async () => {
    for (const withTree of [false, true]) {
      const alice = await tsMember(`alice-${withTree}`, { groupInfoRatchetTree: withTree });
      const groupId = await alice.createGroup(await f.hubSender(), { dsProtocolVersion: false });
      await alice.update();
      const cc = await CoreCryptoClient.create({ domain: DOMAIN });
      cc.submit = dsSubmitter(f.hub);
      const info = encodeMLSMessage((await f.hub.externalCommitInfo(groupId)).groupInfo);
      const join = cc.joinByExternalCommit(groupId, info);
      if (!withTree) {
        // CoreCrypto takes the tree from the GroupInfo alone (its API has no parameter for one); whose limit: CoreCrypto's.
        await expect(join).rejects.toThrow(/CoreCrypto external_join/);
        continue;
      }
      await join;
      expect(kinds(await f.deliver(alice))).toEqual(["commit"]);
      await expectInSync(groupId, [alice], [cc]);
    }
  });
});

describe("a seeded random mix of CoreCrypto and ts-mls members", () => {
  // Invariant after every step: every member is at the hub's epoch, agrees on the tree hash and the member list,
  // and every application message reaches every other member. Actors and operations are drawn from a seeded PRNG.
  type Actor = { kind: "ts"; m: MimiMember } | { kind: "cc"; c: CoreCryptoClient };
  const idOf = (a: Actor) => (a.kind === "ts" ? a.m.clientId : a.c.clientId);

  for (const seed of [1, 2]) {
    it(`seed ${seed}: 14 steps of update, add (either kind), remove and messages by random actors`, async () => {
      const rnd = prng(seed);
      const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
      const creator = await tsMember(`r${seed}-0`);
      const groupId = await creator.createGroup(await f.hubSender(), { dsProtocolVersion: false });
      const actors: Actor[] = [{ kind: "ts", m: creator }];
      let n = 1;

      /** Every member reads its queue; returns the application texts each got. */
      const settle = async (): Promise<Map<string, string[]>> => {
        const texts = new Map<string, string[]>();
        for (const a of [...actors]) {
          const got = a.kind === "ts" ? await f.deliver(a.m) : await ccDeliver(a.c, groupId);
          texts.set(idOf(a), got.flatMap((r) => ("text" in r ? [r.text] : [])));
        }
        return texts;
      };
      const newActor = async (): Promise<Actor> =>
        rnd() < 0.5 ? { kind: "ts", m: await tsMember(`r${seed}-${n++}`) } : { kind: "cc", c: await ccClient() };
      const ccClient = async () => {
        const c = await CoreCryptoClient.create({ domain: DOMAIN });
        c.submit = dsSubmitter(f.hub);
        return c;
      };
      const keyPackageOf = async (a: Actor): Promise<Uint8Array> => (a.kind === "ts" ? encodeKeyPackageBytes((await a.m.generateKeyPackage()).publicPackage) : a.c.keyPackage());

      for (let step = 0; step < 14; step++) {
        const actor = pick(actors);
        const op = actors.length < 3 ? "add" : pick(["update", "add", "remove", "message", "message"] as const);
        if (op === "update") {
          if (actor.kind === "ts") await actor.m.update();
          else await actor.c.update(groupId);
        } else if (op === "add") {
          const joiner = await newActor();
          const kp = await keyPackageOf(joiner);
          if (actor.kind === "ts") await actor.m.add([decodeKeyPackageBytes(kp)]);
          else await actor.c.add(groupId, [kp]);
          actors.push(joiner);
        } else if (op === "remove") {
          const target = pick(actors.filter((a) => a !== actor));
          if (actor.kind === "ts") await actor.m.remove([idOf(target)]);
          else await actor.c.remove(groupId, [idOf(target)]);
          await (target.kind === "ts" ? f.deliver(target.m) : ccDeliver(target.c, groupId));
          actors.splice(actors.indexOf(target), 1);
        } else {
          const text = `m${seed}.${step}`;
          if (actor.kind === "ts") await actor.m.send(text);
          else await sendFromCoreCrypto(f.hub, actor.c, groupId, text);
          const texts = await settle();
          for (const a of actors) if (a !== actor) expect(texts.get(idOf(a)), `${idOf(a)} step ${step}`).toEqual([text]);
          continue;
        }
        await settle();
        await expectInSync(
          groupId,
          actors.flatMap((a) => (a.kind === "ts" ? [a.m] : [])),
          actors.flatMap((a) => (a.kind === "cc" ? [a.c] : [])),
        );
      }
    });
  }
});

describe("what the default (draft -05) rules refuse", () => {
  let strict: HubFixture;
  beforeAll(async () => {
    strict = await startHub("strict.example");
  });
  afterAll(() => strict?.close());

  it("CoreCrypto cannot join a group with ds_protocol_version, and its unsigned requests are refused", async () => {
    const alice = await strict.member("alice", { clientId: userDeviceId("strict.example") });
    const groupId = await alice.createGroup(await strict.hubSender());
    const cc = await CoreCryptoClient.create({ domain: "strict.example" });
    // Under -05 the group carries ds_protocol_version (0xF0A2), which CoreCrypto's leaf cannot list in its
    // capabilities; RFC 9420 (12.1.7, 12.2) lets no such leaf in: ts-mls refuses the Add before any DS sees it.
    await expect(alice.prepareAdd([decodeKeyPackageBytes(await cc.keyPackage())])).rejects.toThrow(/doesn't support extension in GroupContext/);

    // A CoreCrypto commit sent anonymously is refused by a -05 hub (it needs a client_signature).
    const own = await CoreCryptoClient.create({ domain: "strict.example" });
    own.submit = dsSubmitter(strict.hub);
    const gid = await strict.hub.requestGroupId();
    await own.createConversation(gid, (await strict.hubSender()).signaturePublicKey);
    await expect(own.firstCommit(gid)).rejects.toThrow(/CoreCrypto create/);
    expect(String(own.lastRejection)).toMatch(/ds_protocol_version|client_signature/);
  });
});
