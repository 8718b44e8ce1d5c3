// Every group shape survives SIGKILL and restart: a real `serve` holds groups
// that went through each kind of change (committed self-remove, committed hub
// Remove and Add, pending proposals of both kinds, external join, resync,
// a joiner that has not fetched its tree, a reinitialized group, a deleted
// one, and logs on both sides of a snapshot); after the kill each is rebuilt
// from the store equal to what was live, and takes its next request.
import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { createDSTransport, keyPackageMessage, type DSRequestError } from "../../src/client/index.js";
import { DSErrorCode, makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { Federation, type E2EClient } from "./harness.js";

const A = "a.example";
let fed: Federation;
let admin: ReturnType<typeof createClient<typeof AdminService>>;

beforeAll(async () => {
  // A snapshot every 4 commits: some shapes are in the log, some in a snapshot.
  fed = await Federation.start([A], ["--snapshot-interval", "4"]);
});
afterAll(() => fed?.close());

const kinds = (rs: { kind: string }[]) => rs.map((r) => r.kind);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function operator() {
  const op = fed.ca.domain(A);
  const t = createDSTransport({ baseUrl: fed.url(A), ca: fed.ca.ca, cert: op.cert, key: op.key });
  admin = createClient(AdminService, t);
  return t;
}

interface Shape {
  readonly name: string;
  readonly groupId: Uint8Array;
  /** Members that follow the group (have read everything). */
  readonly members: E2EClient[];
  /** The live state's digest before the kill. */
  live?: string;
}

/** The rebuilt state's digest; the live one must equal it, unless this process holds none (just restarted). */
async function verify(s: Shape, live: "cached" | "any" = "cached"): Promise<string> {
  const v = await admin.verifyGroup({ groupId: s.groupId });
  if (live === "cached" || v.liveStateSha256.length > 0) expect(hex(v.liveStateSha256), `${s.name}: live = rebuilt`).toBe(hex(v.rebuiltStateSha256));
  return hex(v.rebuiltStateSha256);
}

describe("restart with every group shape", () => {
  it("rebuilds each group equal to its live state after SIGKILL, and each takes its next request", async () => {
    let t = operator();
    const shapes: Shape[] = [];
    const make = async (name: string, n: number, openJoins = false): Promise<{ groupId: Uint8Array; cs: E2EClient[] }> => {
      const cs = await Promise.all(Array.from({ length: n }, (_, i) => fed.client(`${name}${i}`, A)));
      const groupId = await cs[0]!.member.createGroup(await fed.hubSender(A), openJoins ? [makeExternalJoinPolicyExtension("open")] : []);
      if (n > 1) {
        await cs[0]!.member.addClients(cs.slice(1).map((c) => c.id));
        for (const c of cs.slice(1)) await c.process(1);
      }
      return { groupId, cs };
    };

    {
      const { groupId, cs } = await make("sr", 3);
      await cs[2]!.member.selfRemove();
      for (const c of cs.slice(0, 2)) await c.process(1);
      await cs[0]!.member.commitPending();
      await cs[1]!.process(1);
      await cs[2]!.process(1);
      shapes.push({ name: "committed self-remove", groupId, members: cs.slice(0, 2) });
    }
    {
      const { groupId, cs } = await make("pend", 3);
      await cs[2]!.member.selfRemove();
      for (const c of cs.slice(0, 2)) await c.process(1);
      shapes.push({ name: "pending self-remove", groupId, members: cs.slice(0, 2) });
    }
    {
      const { groupId, cs } = await make("hub", 3);
      await admin.proposeRemoval({ groupId, clientId: cs[2]!.id });
      for (const c of cs) await c.process(1);
      await cs[1]!.member.commitPending();
      await cs[0]!.process(1);
      await cs[2]!.process(1);
      const extra = await fed.client("hubx", A);
      const [kp] = await fed.ds(A).keyPackages([extra.id], [1], cs[0]!.member.registeredAuth());
      await admin.proposeAddition({ groupId, keyPackage: keyPackageMessage(kp!) });
      for (const c of cs.slice(0, 2)) await c.process(1);
      shapes.push({ name: "committed hub Remove, pending hub Add", groupId, members: cs.slice(0, 2) });
    }
    {
      const { groupId, cs } = await make("ext", 2, true);
      const joiner = await fed.client("ext-joiner", A, 0);
      await joiner.member.externalJoin(groupId);
      for (const c of cs) await c.process(1);
      await cs[1]!.member.externalJoin(groupId, true); // resync
      await cs[0]!.process(1);
      await joiner.process(1);
      await cs[1]!.process(1); // its old leaf's copy: stale
      shapes.push({ name: "external join and resync", groupId, members: [cs[0]!, cs[1]!, joiner] });
    }
    let lateJoiner: E2EClient;
    {
      const { groupId, cs } = await make("late", 2);
      lateJoiner = await fed.client("late-joiner", A);
      await cs[0]!.member.addClients([lateJoiner.id]);
      await cs[1]!.process(1);
      for (let i = 0; i < 5; i++) {
        await cs[i % 2]!.member.update();
        await cs[(i + 1) % 2]!.process(1);
      }
      // The joiner has not fetched its tree (welcome_info of an epoch 5 commits and a snapshot ago).
      shapes.push({ name: "joiner not yet joined", groupId, members: cs });
    }
    let closed: Shape;
    {
      const { groupId, cs } = await make("reinit", 2);
      await cs[0]!.member.reinitialize(new TextEncoder().encode(`successor-${Date.now()}@${A}`));
      await cs[1]!.process(1);
      closed = { name: "reinitialized", groupId, members: cs };
      shapes.push(closed);
    }
    let deleted: Uint8Array;
    {
      const { groupId, cs } = await make("del", 2);
      await cs[0]!.member.deleteGroup();
      await cs[1]!.process(1);
      deleted = groupId;
    }

    for (const s of shapes) s.live = await verify(s);
    await fed.crashDomain(A);
    t.close();
    await fed.startDomain(A, ["--snapshot-interval", "4"]);
    t = operator();
    try {
      for (const s of shapes) {
        // The same state, rebuilt by a fresh process from snapshot and log.
        expect(await verify(s, "any"), s.name).toBe(s.live);
        const hub = await fed.hubView(A, s.groupId);
        expect(await verify(s), s.name).toBe(s.live);
        for (const m of s.members) expect(m.member.epoch, `${s.name}: ${m.id}`).toBe(hub.epoch);
      }
      // Each takes its next request.
      const [sr, pend, hubShape, ext, late] = shapes;
      await sr!.members[1]!.member.update();
      await sr!.members[0]!.process(1);
      await pend!.members[1]!.member.commitPending();
      await pend!.members[0]!.process(1);
      await hubShape!.members[0]!.member.commitPending(); // the pending hub Add, as add_clients
      await hubShape!.members[1]!.process(1);
      await ext!.members[2]!.member.send("after the restart");
      for (const m of ext!.members.slice(0, 2)) expect((await m.process(1))[0]).toMatchObject({ kind: "application", text: "after the restart" });
      expect(kinds(await lateJoiner!.process(6))).toEqual(["joined", "commit", "commit", "commit", "commit", "commit"]);
      await lateJoiner!.member.update();
      for (const m of late!.members) await m.process(1);
      // The reinitialized group still takes no commits (ts-mls refuses to commit there: pretend it would).
      const m = closed!.members[1]!.member;
      m.state = { ...m.state!, groupActiveState: { kind: "active" } };
      const err = (await m.update().catch((e: unknown) => e)) as DSRequestError;
      expect(err.code).toBe(DSErrorCode.invalid_message);
      const gone = (await fed.ds(A).externalCommitInfo(deleted!).catch((e: unknown) => e)) as DSRequestError;
      expect(gone.code).toBe(DSErrorCode.unknown_group);
      for (const s of shapes) await verify(s);
    } finally {
      t.close();
    }
  });
});
