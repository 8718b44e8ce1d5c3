// The epoch log is self-contained (DESIGN 10: state = snapshot + log): a
// group whose log holds commits by reference - a committed self-remove, a
// committed hub Remove or Add - is rebuilt from the store exactly as it lives
// in memory, after a cache eviction, on a second instance sharing the store,
// and at an older epoch for welcome_info. And no member can wedge the group
// with proposals no commit can reference; a deleted group stays deleted.
import { createProposal } from "ts-mls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DSRequestError, MimiMember } from "../../src/client/index.js";
import { proposeAddition, proposeRemoval } from "../../src/ds/admin.js";
import { groupKey, type HostedGroup } from "../../src/ds/groups.js";
import { createDeliveryService, type DeliveryService } from "../../src/ds/service.js";
import { encodeGroupState } from "../../src/mls/index.js";
import { DSErrorCode, decodeDSResponse, encodeWith, opaqueV, optional, struct } from "../../src/wire/index.js";
import { decodeEpochLogRecord } from "../../src/ds/records.js";
import Database from "better-sqlite3";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let carol: MimiMember;
let groupId: Uint8Array;
/** The hub's clock (ms), moved by the tests of the grace period. */
let clock = Date.now();

beforeEach(async () => {
  clock = Date.now();
  f = await startHub("hub.example", { now: () => clock });
  ({ groupId, members: [alice, bob, carol] } = await f.group("alice", "bob", "carol"));
});
afterEach(() => f?.close());

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** The live state of the group, then the same group rebuilt from the store by this instance (eviction) and by a second one. */
async function expectRebuiltEqualsLive(): Promise<HostedGroup> {
  const key = groupKey(groupId);
  const live = (await f.ds.context.groups.get(key))!;
  const liveBytes = hex(encodeGroupState(live.state));
  f.ds.context.groups.evict(key);
  const reloaded = (await f.ds.context.groups.get(key))!;
  expect(hex(encodeGroupState(reloaded.state))).toBe(liveBytes);
  const second: DeliveryService = await createDeliveryService({ domain: f.domain, store: f.store, keyFile: f.keyFile });
  const other = (await second.context.groups.get(key))!;
  expect(hex(encodeGroupState(other.state))).toBe(liveBytes);
  return reloaded;
}

async function expectEveryoneAt(members: MimiMember[]) {
  const g = (await f.hosted(groupId))!;
  for (const m of members) expect(m.epoch, m.clientId).toBe(g.epoch);
}

describe("a log with commits by reference is rebuilt", () => {
  it("after a committed self_remove (eviction, second instance, next commit)", async () => {
    await bob.selfRemove();
    await f.deliver(alice);
    await f.deliver(carol);
    await alice.commitPending();
    await f.deliver(carol);
    await expectRebuiltEqualsLive();
    // The rebuilt state accepts the next commit of a member that followed.
    f.ds.context.groups.evict(groupKey(groupId));
    await carol.update();
    await f.deliver(alice);
    await expectEveryoneAt([alice, carol]);
  });

  it("after committed hub Remove and hub Add proposals", async () => {
    await proposeRemoval(f.ds.context, groupId, carol.clientId);
    await f.deliver(alice);
    await f.deliver(bob);
    await bob.commitPending();
    await f.deliver(alice);
    await expectRebuiltEqualsLive();
    const dave = await f.member("dave");
    await proposeAddition(f.ds.context, groupId, (await dave.generateKeyPackage()).publicPackage);
    await f.deliver(alice);
    await f.deliver(bob);
    await expectRebuiltEqualsLive(); // a pending hub proposal is part of the state
    await alice.commitPending();
    await f.deliver(bob);
    await f.deliver(dave);
    await expectRebuiltEqualsLive();
    await expectEveryoneAt([alice, bob, dave]);
  });

  it("welcome_info serves an older Add epoch after a commit by reference", async () => {
    const dave = await f.member("dave");
    await alice.add([(await dave.generateKeyPackage()).publicPackage]);
    await f.deliver(bob);
    await f.deliver(carol);
    await carol.selfRemove();
    await f.deliver(alice);
    await f.deliver(bob);
    await bob.commitPending();
    await f.deliver(alice);
    f.ds.context.groups.evict(groupKey(groupId));
    // Dave fetches the tree of the epoch he was added in, two epochs later.
    const received = await f.deliver(dave);
    expect(received.map((r) => r.kind)).toEqual(["joined", "proposal", "commit"]);
    await expectEveryoneAt([alice, bob, dave]);
  });
});

describe("pending proposals never block the group", () => {
  const selfRemoveWithData = async (m: MimiMember, data: string) => {
    const res = await createProposal(m.state!, true, { proposalType: "remove", remove: { removed: m.leafIndex } }, m.cs, new TextEncoder().encode(data));
    return m.hub!.selfRemoveClient(res.message, { kind: "member", senderIndex: m.leafIndex, signaturePrivateKey: m.signatureKeyPair.signKey, signature: m.cs.signature });
  };

  it("a second self-remove of the same member is refused; the same one again is accepted once", async () => {
    const first = await createProposal(bob.state!, true, { proposalType: "remove", remove: { removed: bob.leafIndex } }, bob.cs, new TextEncoder().encode("first"));
    const auth = { kind: "member" as const, senderIndex: bob.leafIndex, signaturePrivateKey: bob.signatureKeyPair.signKey, signature: bob.cs.signature };
    await bob.hub!.selfRemoveClient(first.message, auth);
    await bob.hub!.selfRemoveClient(first.message, auth); // a retry: ok, stored and fanned out once
    expect((await f.deliver(carol)).map((r) => r.kind)).toEqual(["proposal"]);
    const err = await selfRemoveWithData(bob, "second").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DSRequestError);
    expect((err as DSRequestError).code).toBe(DSErrorCode.conflicting_proposal);
    // 400 more from the same member store nothing more.
    for (let i = 0; i < 20; i++) await selfRemoveWithData(bob, `spam ${i}`).catch(() => undefined);
    const key = groupKey(groupId);
    const g = (await f.ds.context.groups.get(key))!;
    expect(await f.store.listProposals(key, g.epoch)).toHaveLength(1);
    await f.deliver(alice);
    await alice.commitPending();
    await expectRebuiltEqualsLive();
  });

  it("a member cannot self-remove when the hub already proposed its removal (and the reverse)", async () => {
    await proposeRemoval(f.ds.context, groupId, bob.clientId);
    const err = await bob.selfRemove().catch((e: unknown) => e);
    expect((err as DSRequestError).code).toBe(DSErrorCode.conflicting_proposal);
    await carol.selfRemove();
    await expect(proposeRemoval(f.ds.context, groupId, carol.clientId)).rejects.toMatchObject({ code: DSErrorCode.conflicting_proposal });
    await f.deliver(alice);
    await alice.commitPending();
    await f.deliver(bob);
    await f.deliver(carol);
    await expectRebuiltEqualsLive();
    expect((await f.hosted(groupId))!.state.tree.memberCount).toBe(1);
  });
});

describe("deleted groups stay deleted", () => {
  it("a replayed create_group for a deleted group id is refused", async () => {
    const eve = await f.member("eve");
    // Capture eve's create_group request bytes on their way to the hub.
    const rpc = f.hub.hub as { submit: (req: { dsRequest: Uint8Array }, opts?: unknown) => Promise<{ dsResponse: Uint8Array }> };
    const submit = rpc.submit.bind(rpc);
    const captured: Uint8Array[] = [];
    rpc.submit = (req, opts) => (captured.push(req.dsRequest), submit(req, opts));
    const eveGroup = await eve.createGroup(await f.hubSender());
    rpc.submit = submit;
    const create = captured.find((b) => b[2] === 9)!; // request_type create_group
    await eve.deleteGroup();
    expect(await f.hosted(eveGroup)).toBeUndefined();
    const answer = decodeDSResponse(await f.hub.submit(create)).responseBody;
    expect(answer.responseType === "error" && answer.error.code).toBe(DSErrorCode.group_exists);
    expect(await f.hosted(eveGroup)).toBeUndefined();
  });
});

describe("proposals no commit takes stop blocking the group", () => {
  const graceMs = 5 * 60_000;

  it("a hub Add that members did not take is required for the grace period, then commits may leave it out", async () => {
    const dave = await f.member("dave");
    await proposeAddition(f.ds.context, groupId, (await dave.generateKeyPackage()).publicPackage);
    // Alice's library rejected the external Add (as OpenMLS does): she never stored it.
    const err = await alice.update().catch((e: unknown) => e);
    expect((err as DSRequestError).code).toBe(DSErrorCode.missing_proposals);
    clock += graceMs + 1;
    await alice.update();
    await f.deliver(bob);
    await f.deliver(carol);
    await expectEveryoneAt([alice, bob, carol]);
    await expectRebuiltEqualsLive();
  });

  it("the member a pending Remove targets must include it even after the grace period", async () => {
    await proposeRemoval(f.ds.context, groupId, carol.clientId);
    clock += graceMs + 1;
    const err = await carol.update().catch((e: unknown) => e);
    expect((err as DSRequestError).code).toBe(DSErrorCode.missing_proposals);
    await bob.update(); // another member may leave it out now
    await f.deliver(alice);
    await expectEveryoneAt([alice, bob]);
  });
});

describe("groups logged by older versions", () => {
  const v1 = struct<{ message: Uint8Array; partialGroupInfo?: Uint8Array }>([
    ["message", "message", opaqueV],
    ["partial_group_info", "partialGroupInfo", optional(opaqueV)],
  ]);
  /** Rewrites the group's log as a version without proposals in its records wrote it. */
  function rewriteLogAsV1(): void {
    const db = new Database(join(f.dir, "ds.sqlite"));
    try {
      const key = groupKey(groupId);
      for (const row of db.prepare("SELECT epoch, entry FROM group_log WHERE group_id = ?").all(key) as { epoch: number; entry: Uint8Array }[]) {
        const r = decodeEpochLogRecord(row.entry);
        db.prepare("UPDATE group_log SET entry = ? WHERE group_id = ? AND epoch = ?").run(encodeWith(v1, { message: r.message, ...(r.partialGroupInfo !== undefined ? { partialGroupInfo: r.partialGroupInfo } : {}) }), key, row.epoch);
      }
    } finally {
      db.close();
    }
  }

  it("a version-1 log without commits by reference still replays", async () => {
    await alice.update();
    await f.deliver(bob);
    const before = hex(encodeGroupState((await f.hosted(groupId))!.state));
    rewriteLogAsV1();
    f.ds.context.groups.evict(groupKey(groupId));
    expect(hex(encodeGroupState((await f.hosted(groupId))!.state))).toBe(before);
    await bob.update();
  });

  it("a version-1 commit by reference answers group_state_lost (DataLoss), changing nothing", async () => {
    await bob.selfRemove();
    await f.deliver(alice);
    await alice.commitPending();
    const epoch = (await f.hosted(groupId))!.epoch;
    rewriteLogAsV1();
    f.ds.context.groups.evict(groupKey(groupId));
    const err = (await alice.update().catch((e: unknown) => e)) as DSRequestError;
    expect(err).toBeInstanceOf(DSRequestError);
    expect(err.code).toBe(DSErrorCode.group_state_lost);
    expect(err.rpcCode).toBe(Code.DataLoss);
    expect(err.dsMessage).toMatch(/past epoch \d+/);
    expect(await f.store.groupEpoch(groupKey(groupId))).toBe(epoch);
    // Reads fail the same way, without replaying again and again.
    await expect(f.hub.externalCommitInfo(groupId)).rejects.toMatchObject({ code: DSErrorCode.group_state_lost });
    // The operator sees it: logged at error level, with the group and the DS code.
    const logged = f.server.logs.filter((l) => l.level === 50 && l.groupId === groupKey(groupId));
    expect(logged.length).toBeGreaterThanOrEqual(2);
    expect(logged[0]).toMatchObject({ msg: "handler failed", dsError: "group_state_lost" });
    expect(String((logged[0]!.err as { message?: string }).message)).toMatch(/unknown_proposal/);
  });
});
