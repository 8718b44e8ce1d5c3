// Local delivery through group feeds (src/ds/fanout.ts, src/delivery/inbox.ts):
// a message to a group is one feed entry however many local members there
// are; each member gets what was sent while it was a member, the sender does
// not get its own message, a joiner starts after the commit that added it and
// a removed member still gets the commit that removed it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MimiMember } from "../../src/client/index.js";
import { groupFeed } from "../../src/store/port.js";
import { groupKey, HostedGroup } from "../../src/ds/groups.js";
import { makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "./fixture.js";

let f: HubFixture;
let alice: MimiMember;
let bob: MimiMember;
let carol: MimiMember;
let dave: MimiMember;
let groupId: Uint8Array;
const kinds = (xs: readonly { kind: string }[]) => xs.map((x) => x.kind);

beforeAll(async () => {
  f = await startHub();
  alice = await f.member("alice");
  bob = await f.member("bob");
  carol = await f.member("carol");
  // Open to external joins (dave joins that way below).
  groupId = await alice.createGroup(await f.hubSender(), [makeExternalJoinPolicyExtension("open")]);
});
afterAll(() => f?.close());

describe("group feeds", () => {
  it("joiners get their Welcome and what follows, not the commit that added them", async () => {
    await alice.add([(await bob.generateKeyPackage()).publicPackage, (await carol.generateKeyPackage()).publicPackage]);
    expect(kinds(await f.deliver(bob))).toEqual(["joined"]);
    expect(kinds(await f.deliver(carol))).toEqual(["joined"]);
    expect(await f.store.feedMembers(groupKey(groupId))).toEqual([alice.clientId, bob.clientId, carol.clientId].sort());
  });

  it("one message is one feed entry; everyone but the sender receives it", async () => {
    const feed = groupFeed(groupKey(groupId));
    const before = (await f.store.queueInfo(feed)).lastSeq;
    await bob.send("hello");
    expect((await f.store.queueInfo(feed)).lastSeq).toBe(before + 1n);
    expect(await f.deliver(alice)).toEqual([expect.objectContaining({ kind: "application", text: "hello" })]);
    expect(await f.deliver(carol)).toEqual([expect.objectContaining({ kind: "application", text: "hello" })]);
    expect(await f.deliver(bob)).toEqual([]);
  });

  it("an external joiner receives what follows its join; a removed member gets its removal and nothing after", async () => {
    dave = await f.member("dave");
    await dave.externalJoin(groupId);
    for (const m of [alice, bob, carol]) expect(kinds(await f.deliver(m))).toEqual(["commit"]);
    await carol.send("welcome dave");
    expect(await f.deliver(dave)).toEqual([expect.objectContaining({ kind: "application", text: "welcome dave" })]);
    for (const m of [alice, bob]) await f.deliver(m);

    await alice.remove([carol.clientId]);
    await bob.send("carol is gone");
    expect(await f.deliver(carol)).toEqual([expect.objectContaining({ kind: "commit", removed: true })]);
    expect(await f.store.feedMemberships(carol.clientId)).toEqual([]);
    expect(kinds(await f.deliver(bob))).toEqual(["commit"]); // the sender does not get its own message
    expect(kinds(await f.deliver(dave))).toEqual(["commit", "application"]);
    expect(kinds(await f.deliver(alice))).toEqual(["application"]); // nor the committer its commit

    // The members-by-domain grouping, kept up to date commit by commit, equals one computed afresh.
    const g = (await f.hosted(groupId))!;
    const fresh = new HostedGroup(g.key, g.state, g.metadata, g.tokens, 0);
    expect(g.byDomain(f.domain)).toEqual(fresh.byDomain(f.domain));
    expect([...g.byDomain(f.domain).get(f.domain)!.clientIds].sort()).toEqual([alice.clientId, bob.clientId, dave.clientId].sort());
  });

  it("deleting the group: every member gets the delete commit, then the memberships end and the feed is emptied", async () => {
    await alice.deleteGroup();
    expect(await f.store.feedMembers(groupKey(groupId))).toEqual([]);
    for (const m of [bob, dave]) expect(await f.deliver(m)).toEqual([expect.objectContaining({ kind: "commit", removed: true })]);
    expect(await f.deliver(alice)).toEqual([]);
    expect((await f.store.queueInfo(groupFeed(groupKey(groupId)))).length).toBe(0);
  });
});
