// Issue 13 items 2, 5, 6, 7 and 10 against real `serve` processes with
// default settings (two peered domains on loopback): posing as a registered
// client inside a group, queueing a Welcome for a client without a token of
// its DS, draining KeyPackages anonymously, replaying a signed send_message
// (also across a restart), and adding members of a domain that is not a peer.
// Every attempt is refused (or, for the replay, answered ok without a second
// delivery), and the victims' queues stay quiet.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildDSRequest, DSRequestError, MimiMember, type RequestAuth } from "../../src/client/index.js";
import { decodeDSResponse, encodeDSRequest } from "../../src/wire/index.js";
import { Federation } from "./harness.js";

const A = "a.example";
const B = "b.example";
let fed: Federation;

beforeAll(async () => {
  fed = await Federation.start([A, B]);
});
afterAll(() => fed?.close());

const codeOf = (e: unknown) => (e instanceof DSRequestError ? e.codeName : `not a DS error: ${String(e)}`);

describe("a hostile client against real serve processes (defaults)", () => {
  it("refuses impersonation, queue injection, anonymous draining, foreign members; dedupes replays across a restart", async () => {
    const alice = await fed.client("alice", A);
    const bob = await fed.client("bob", B);
    const victim = await fed.client("victim", A, 3);
    const groupId = await alice.member.createGroup(await fed.hubSender(A));
    await alice.member.addClients([bob.id]);
    await bob.process(1);

    // Item 2: an external join under the victim's name with another key (resync-only group).
    const impostor = await MimiMember.create({ clientId: victim.id, hub: fed.ds(A) });
    expect(codeOf(await impostor.externalJoin(groupId).catch((e: unknown) => e))).toBe("permission_denied");
    // ... and a forged KeyPackage of the victim in add_clients, even with its real token.
    impostor.token = victim.member.token;
    const forged = (await impostor.generateKeyPackage()).publicPackage;
    expect(codeOf(await alice.member.add([forged]).catch((e: unknown) => e))).toBe("permission_denied");

    // Item 6: a Welcome for an unregistered client of a.example with a made-up token.
    const ghost = await MimiMember.create({ clientId: `mimi://${A}/u/ghost/d/1`, hub: fed.ds(A) });
    ghost.token = { token: randomBytes(69) };
    expect(codeOf(await alice.member.add([(await ghost.generateKeyPackage()).publicPackage]).catch((e: unknown) => e))).toBe("unknown_client");

    // Item 10: a member of a domain that is not a peer.
    const stranger = await MimiMember.create({ clientId: "mimi://evil.example/u/x/d/1", hub: fed.ds(A) });
    stranger.token = { token: randomBytes(16) };
    expect(codeOf(await alice.member.add([(await stranger.generateKeyPackage()).publicPackage]).catch((e: unknown) => e))).toBe("permission_denied");

    // Item 7: anonymous key_packages is refused at both DSs; the victim keeps its 3 packages,
    // which bob's DS may still fetch for bob (signed by bob, over mutual TLS from b to a).
    for (const d of [A, B]) expect(codeOf(await fed.ds(d).keyPackages([victim.id]).catch((e: unknown) => e))).toBe("authentication_failed");
    const viaB = await fed.ds(B).keyPackages([victim.id], [1], bob.member.registeredAuth());
    expect(viaB).toHaveLength(1);

    // Item 5: one signed send_message submitted five times, then again after a restart of the hub.
    const { message, newState } = await bob.member.prepareSend("exactly once");
    bob.member.state = newState;
    const auth: RequestAuth = { kind: "member", senderIndex: newState.privatePath.leafIndex, signaturePrivateKey: bob.member.signatureKeyPair.signKey, signature: bob.member.cs.signature };
    const bytes = encodeDSRequest(await buildDSRequest({ requestType: "send_message", sendMessageRequest: { applicationMessage: message } }, auth));
    for (let i = 0; i < 5; i++) expect(decodeDSResponse(await fed.ds(A).submit(bytes)).responseBody.responseType).toBe("ok");
    expect(await alice.process(1)).toEqual([expect.objectContaining({ kind: "application", text: "exactly once" })]);
    await fed.stopDomain(A);
    await fed.startDomain(A);
    const again = decodeDSResponse(await fed.ds(A).submit(bytes)).responseBody;
    expect(again.responseType).toBe("ok");
    await alice.expectQuiet(1000);
    await victim.expectQuiet(100);
  });
});
