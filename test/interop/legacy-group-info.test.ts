// GroupInfos in the form ts-mls 1.6.4 wrote (external_pub as the bare key):
// the hub refuses new ones (invalid_message, nothing changes), while a group
// stored with one before this check keeps loading (its log replays), is
// served as stored, and a member joins externally from it with the patched
// SDK, whose commit then puts the RFC 9420 form back.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClientState, Extension } from "ts-mls";
import { createGroupInfo } from "ts-mls/createCommit.js";
import type { MimiMember, PreparedCommit } from "../../src/client/index.js";
import { DSRequestError } from "../../src/client/index.js";
import { groupKey } from "../../src/ds/groups.js";
import { encodeEpochLogRecord } from "../../src/ds/records.js";
import { encodeMLSMessage, encodePartialGroupInfo, type PartialGroupInfo, makeExternalJoinPolicyExtension } from "../../src/wire/index.js";
import { startHub, type HubFixture } from "../ds/fixture.js";

let f: HubFixture;
beforeAll(async () => {
  f = await startHub("legacy.example");
});
afterAll(() => f?.close());

/** The PartialGroupInfo an SDK on plain ts-mls 1.6.4 sent: external_pub = the bare HPKE key, signed as such. */
async function legacyPartialGroupInfo(m: MimiMember, p: PreparedCommit): Promise<PartialGroupInfo> {
  const rfc = p.groupUpdate.partialGroupInfo.groupInfoExtensions.find((e) => e.extensionType === "external_pub")!;
  const bare: Extension = { extensionType: "external_pub", extensionData: rfc.extensionData.subarray(1) };
  const s: ClientState = p.newState;
  const gi = await createGroupInfo(s.groupContext, s.confirmationTag, s, [bare], m.cs);
  return { groupInfoExtensions: gi.extensions, signature: gi.signature };
}

const externalPubOf = async (groupId: Uint8Array): Promise<Uint8Array> => {
  const info = await f.hub.externalCommitInfo(groupId);
  if (info.groupInfo.wireformat !== "mls_group_info") throw new Error("no GroupInfo");
  return info.groupInfo.groupInfo.extensions.find((e) => e.extensionType === "external_pub")!.extensionData;
};

describe("GroupInfos with ts-mls 1.6.4's external_pub", () => {
  it("are refused when sent, replay when stored, are served as stored, and the patched SDK joins from them", async () => {
    const alice = await f.member("alice");
    const bob = await f.member("bob");
    const groupId = await alice.createGroup(await f.hubSender(), [makeExternalJoinPolicyExtension("open")]);
    await alice.add([(await bob.generateKeyPackage()).publicPackage]);
    await f.deliver(bob);
    expect((await externalPubOf(groupId)).length).toBe(33);

    // Sent now: invalid_message, the group stays at its epoch.
    const p = await alice.prepareRemove([]);
    const legacy = await legacyPartialGroupInfo(alice, p);
    const refused = await alice.hub!.updateClient({ commit: p.groupUpdate.commit, partialGroupInfo: legacy }, undefined, {
      kind: "member",
      senderIndex: alice.leafIndex,
      signaturePrivateKey: alice.signatureKeyPair.signKey,
      signature: alice.cs.signature,
    }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DSRequestError);
    expect((refused as DSRequestError).message).toMatch(/external_pub is not RFC 9420's opaque external_pub<V>/);
    expect((await f.hosted(groupId))!.epoch).toBe(1n);

    // Stored by a hub from before the check: the same commit in the epoch log, as stageGroupUpdate writes it.
    const key = groupKey(groupId);
    await f.store.apply({
      ops: [{ kind: "advanceGroup", groupId: key, expectedEpoch: 1n, logEntry: encodeEpochLogRecord({ proposals: [], message: encodeMLSMessage(p.groupUpdate.commit), partialGroupInfo: encodePartialGroupInfo(legacy) }) }],
    });
    alice.state = p.newState;
    await bob.processIncoming(encodeMLSMessage(p.groupUpdate.commit));
    f.ds.context.groups.evict(key);
    const reloaded = (await f.hosted(groupId))!;
    expect(reloaded.epoch).toBe(2n);
    expect((await externalPubOf(groupId)).length).toBe(32); // served as stored (its signature covers it)

    // The patched SDK reads the bare key (by the KEM's key length) and joins; its commit writes the RFC form.
    const carol = await f.member("carol");
    await carol.externalJoin(groupId);
    for (const m of [alice, bob]) expect((await f.deliver(m)).map((r) => r.kind)).toEqual(["commit"]);
    expect((await externalPubOf(groupId)).length).toBe(33);
    expect(carol.epoch).toBe(3n);
    expect(Buffer.from(carol.treeHash).equals(Buffer.from(alice.treeHash))).toBe(true);
  });
});
