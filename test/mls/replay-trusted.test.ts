// Replaying the store's own log (state.ts replay, a restart's group load)
// trusts the commits' signatures, as decodeGroupState trusts a snapshot's
// leaves: they were verified when the commit was accepted. A live message is
// verified as before. (Issue 16: a restart of a 100,000-member group verified
// a signature per member added since the snapshot.)
import { describe, expect, it } from "vitest";
import { createCommit } from "ts-mls";
import { Harness, mlsBytes, partialGroupInfoOf } from "./harness.js";
import { tsMlsSuite, toHex } from "./helpers.js";
import { merge, processMessage } from "../../src/mls/group.js";
import { decodeGroupState, encodeGroupState, ratchetTreeBytes, replay } from "../../src/mls/state.js";

describe("replay of the stored log", () => {
  it("rebuilds the live state and does not verify signatures again; live processing does", async () => {
    const cs = await tsMlsSuite("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
    if (typeof cs === "string") throw new Error(cs);
    const h = new Harness(cs);
    await h.create("alice@a.example");
    const snap = encodeGroupState(h.engine);
    const bob = await h.identity("bob@b.example");
    const r = await createCommit({ state: h.state("alice@a.example"), cipherSuite: h.cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: bob.kp } }] });
    const message = mlsBytes(r.commit);
    const partialGroupInfo = await partialGroupInfoOf(r.newState, h.cs);
    const live = await merge(h.engine, await processMessage(h.engine, message), partialGroupInfo);
    const restored = await replay(await decodeGroupState(snap), [{ message, partialGroupInfo }]);
    expect(toHex(restored.groupContextBytes)).toBe(toHex(live.groupContextBytes));
    expect(toHex(ratchetTreeBytes(restored))).toBe(toHex(ratchetTreeBytes(live)));

    // The KeyPackage's signature broken (its last byte): refused live, taken as stored on replay.
    const kpSig = bob.kp.signature;
    const at = Buffer.from(message).lastIndexOf(Buffer.from(kpSig));
    expect(at).toBeGreaterThan(0);
    const tampered = new Uint8Array(message);
    tampered[at + kpSig.length - 1]! ^= 1;
    await expect(processMessage(h.engine, tampered)).rejects.toMatchObject({ code: "invalid_signature" });
    const trusted = await replay(await decodeGroupState(snap), [{ message: tampered }]);
    expect(trusted.groupContext.epoch).toBe(live.groupContext.epoch);
    // The replayed state verifies the next live message as usual.
    expect(trusted.options.verifySignatures).not.toBe(false);
    await expect(processMessage(trusted, tampered)).rejects.toMatchObject({ code: "wrong_epoch" });
  });
});
