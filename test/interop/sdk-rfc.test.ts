// The SDK's issue-12 fixes, with ts-mls members only (no DS): external_pub in
// RFC 9420's form (and the 1.6.4 bare key still read), the ratchet tree in
// Welcomes by default, and joins after Adds without path plus updates, which
// plain ts-mls 1.6.4 refused ("non-blank intermediate node must list leaf node
// in its unmerged_leaves": it compared unmerged leaves along the whole direct
// path; patches/ts-mls+1.6.4.patch checks only the nodes below, RFC 9420 7.9.2).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { MLSMessage } from "ts-mls";
import { createGroupInfo } from "ts-mls/createCommit.js";
import { MimiMember } from "../../src/client/index.js";
import { decodeMLSMessage, encodeMLSMessage } from "../../src/wire/index.js";

const wire = (m: MLSMessage): Uint8Array => encodeMLSMessage(m);

async function hubSender() {
  return (await MimiMember.create({ clientId: "hub@hub.example" })).asExternalSender;
}

/** A ts-mls group of members that process every commit, as clients of one DS would. */
class LocalGroup {
  private constructor(readonly members: MimiMember[], private next: number) {}

  static async create(): Promise<LocalGroup> {
    const a = await MimiMember.create({ clientId: "m0:1@a.example" });
    await a.createLocalGroup(Uint8Array.of(7, 7), await hubSender());
    return new LocalGroup([a], 1);
  }

  private async fanout(committer: MimiMember, commit: MLSMessage): Promise<void> {
    for (const m of this.members) if (m !== committer) await m.processIncoming(wire(commit));
  }

  /** `adder` adds `n` new clients (a commit without path, as the SDK's Adds are); they join from the Welcome alone. */
  async add(adder: MimiMember, n: number): Promise<MimiMember[]> {
    const joiners: MimiMember[] = [];
    for (let i = 0; i < n; i++) joiners.push(await MimiMember.create({ clientId: `m${this.next++}:1@a.example` }));
    const kps = await Promise.all(joiners.map(async (j) => (await j.generateKeyPackage()).publicPackage));
    const p = await adder.prepareAdd(kps);
    adder.state = p.newState;
    await this.fanout(adder, p.groupUpdate.commit);
    // No tree passed: it comes from the Welcome's ratchet_tree extension.
    for (const j of joiners) await j.joinFromWelcome(wire({ version: "mls10", wireformat: "mls_welcome", welcome: p.welcome }));
    this.members.push(...joiners);
    return joiners;
  }

  async update(m: MimiMember): Promise<void> {
    const p = await m.prepareRemove([]);
    m.state = p.newState;
    await this.fanout(m, p.groupUpdate.commit);
  }

  async remove(by: MimiMember, target: MimiMember): Promise<void> {
    const p = await by.prepareRemove([target.clientId]);
    by.state = p.newState;
    await this.fanout(by, p.groupUpdate.commit);
    this.members.splice(this.members.indexOf(target), 1);
  }

  expectInSync(): void {
    const th = Buffer.from(this.members[0]!.treeHash).toString("hex");
    for (const m of this.members) expect(Buffer.from(m.treeHash).toString("hex"), m.clientId).toBe(th);
  }
}

describe("joins after Adds without path and updates (patched ts-mls tree check)", () => {
  it("the tree L L L P[3] L _ L P[] (node 3 lists leaf 3, the root above does not) takes a joiner", async () => {
    const g = await LocalGroup.create();
    const [a] = g.members as [MimiMember];
    const [b] = await g.add(a, 2); // leaves 1, 2; no parent nodes yet
    await g.update(b!); // nodes 1 and 3 (the root of 4 leaves) get keys
    await g.add(a, 1); // leaf 3: node 3 now lists it as unmerged
    const [e] = await g.add(a, 1); // leaf 4: the tree grows to 8 leaves, root 7 blank
    await g.update(e!); // root 7 gets a key and no unmerged leaves; node 3 still lists leaf 3
    const tree = a.ratchetTree;
    expect(tree[3]?.nodeType === "parent" && tree[3].parent.unmergedLeaves).toEqual([3]);
    expect(tree[7]?.nodeType === "parent" && tree[7].parent.unmergedLeaves).toEqual([]);
    // Plain ts-mls 1.6.4 fails this join with "non-blank intermediate node must list leaf node in its unmerged_leaves".
    await g.add(a, 1);
    g.expectInSync();
  });

  it("random adds, updates and removes: every joiner joins and every member agrees on the tree", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ op: fc.constantFrom("add", "add", "update", "update", "remove"), who: fc.nat(), n: fc.integer({ min: 1, max: 2 }) }), { minLength: 6, maxLength: 10 }),
        async (steps) => {
          const g = await LocalGroup.create();
          for (const s of steps) {
            const actor = g.members[s.who % g.members.length]!;
            if (s.op === "add") await g.add(actor, s.n);
            else if (s.op === "update") await g.update(actor);
            else if (g.members.length > 1) await g.remove(actor, g.members.find((m) => m !== actor)!);
            g.expectInSync();
          }
        },
      ),
      { numRuns: 4, seed: 12 },
    );
  });
});

describe("external_pub in RFC 9420 form", () => {
  it("PartialGroupInfos carry opaque external_pub<V> (0x20 then the 32-byte X25519 key); ts-mls joins externally from it", async () => {
    const g = await LocalGroup.create();
    const [a] = g.members as [MimiMember];
    await g.add(a, 1);
    const p = await a.prepareRemove([]);
    const ext = p.groupUpdate.partialGroupInfo.groupInfoExtensions.find((e) => e.extensionType === "external_pub")!;
    expect(ext.extensionData.length).toBe(33);
    expect(ext.extensionData[0]).toBe(0x20);
  });

  it("the bare key ts-mls 1.6.4 wrote is still read (groups whose GroupInfo an old SDK made); other lengths are refused", async () => {
    const { joinGroupExternal, createGroupInfoWithExternalPub } = await import("ts-mls");
    const { readExternalPub } = await import("ts-mls/createCommit.js");
    const a = await MimiMember.create({ clientId: "a:1@a.example" });
    await a.createLocalGroup(Uint8Array.of(3), await hubSender());
    const state = a.state!;
    const rfc = await createGroupInfoWithExternalPub(state, [], a.cs);
    const key = rfc.extensions.find((e) => e.extensionType === "external_pub")!.extensionData.subarray(1);
    const legacy = await createGroupInfo(state.groupContext, state.confirmationTag, state, [{ extensionType: "external_pub", extensionData: key }], a.cs);
    const suite = state.groupContext.cipherSuite;
    expect(readExternalPub(key, suite)).toEqual(key);
    expect(() => readExternalPub(key.subarray(1), suite)).toThrow(/external_pub/);
    expect(() => readExternalPub(Uint8Array.of(0x21, ...key, 0), suite)).toThrow(/external_pub/); // RFC form, 33-byte key
    // 32 bytes that also parse as a 31-byte opaque<V> are a bare X25519 key: the KEM's key length decides.
    const lookalike = Uint8Array.of(0x1f, ...key.subarray(1));
    expect(readExternalPub(lookalike, suite)).toEqual(lookalike);
    for (const gi of [rfc, legacy]) {
      const j = await MimiMember.create({ clientId: `j${gi === rfc ? 1 : 2}:1@a.example` });
      const kp = await j.generateKeyPackage();
      const joined = await joinGroupExternal(gi, kp.publicPackage, kp.privatePackage, false, j.cs, state.ratchetTree);
      const commit = decodeMLSMessage(wire({ version: "mls10", wireformat: "mls_public_message", publicMessage: joined.publicMessage }));
      expect(await a.processIncoming(commit)).toMatchObject({ kind: "commit", epoch: 1n });
      a.state = state; // back to epoch 0 for the next form
    }
  });
});

describe("Welcomes carry the ratchet tree", () => {
  it("by default; welcomeRatchetTree: false leaves it out", async () => {
    for (const withTree of [true, false]) {
      const a = await MimiMember.create({ clientId: "a:1@a.example", welcomeRatchetTree: withTree });
      const b = await MimiMember.create({ clientId: "b:1@a.example" });
      await a.createLocalGroup(Uint8Array.of(4), await hubSender());
      const p = await a.prepareAdd([(await b.generateKeyPackage()).publicPackage]);
      const { groupInfo } = await b.inspectWelcome(p.welcome);
      expect(groupInfo.extensions.some((e) => e.extensionType === "ratchet_tree")).toBe(withTree);
    }
  });
});
