// MimiGroup without a DS: what one client does to one group's state is
// serialized. A queue being applied while the app sends used to interleave
// read-modify-writes of the ts-mls state: a send's sender-ratchet step could be
// overwritten by a concurrently applied message, so the next send reused a
// generation (the same key and nonce) and receivers failed with "Desired gen
// in the past". Found by the random driver of test/client/sdk.test.ts.
import { describe, expect, it } from "vitest";
import type { MLSMessage } from "ts-mls";
import { MimiClient } from "../../src/client/index.js";

describe("MimiGroup state updates", () => {
  it("sends and applies concurrently without losing a ratchet step", async () => {
    const hub = await MimiClient.create({ clientId: "mimi://hub.example" });
    const alice = await MimiClient.create({ clientId: "alice:1@a.example" });
    const bob = await MimiClient.create({ clientId: "bob:1@a.example" });
    const a0 = alice.adopt(await alice.createLocalGroup(Uint8Array.of(7), hub.asExternalSender), undefined);
    const add = await a0.prepareAdd([(await bob.generateKeyPackage()).publicPackage]);
    a0.state = add.newState;
    const b = await bob.joinWithTree(add.welcome, a0.ratchetTree);
    const n = 20;

    const fromBob: MLSMessage[] = [];
    for (let i = 0; i < n; i++) fromBob.push((await b.prepareSend(`bob ${i}`)).message);
    // Alice applies bob's messages while she sends her own: all at once.
    const [sent, applied] = await Promise.all([
      Promise.all(Array.from({ length: n }, (_, i) => a0.prepareSend(`alice ${i}`))),
      Promise.all(fromBob.map((m) => a0.processIncoming(m))),
    ]);
    expect(applied.map((r) => (r as { text: string }).text)).toEqual(fromBob.map((_, i) => `bob ${i}`));
    const senderData = sent.map((s) => (s.message as { privateMessage: { encryptedSenderData: Uint8Array } }).privateMessage.encryptedSenderData);
    expect(new Set(senderData.map((g) => Buffer.from(g).toString("hex"))).size).toBe(n);
    const got: string[] = [];
    for (const s of sent) got.push(((await b.processIncoming(s.message)) as { text: string }).text);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => `alice ${i}`));
  });
});
