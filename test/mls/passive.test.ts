// passive-client-*.json: a ts-mls client joins from the Welcome with the
// vector's private keys; the engine is seeded from that client's public state;
// then every message goes to both and the GroupContexts must stay identical.
import { describe, it, expect, afterAll } from "vitest";
import { decodeMlsMessage, joinGroup, processMessage, acceptAll, type ClientState, type MLSMessage } from "ts-mls";
import { encodeGroupContext } from "ts-mls/groupContext.js";
import { encodeRatchetTree, decodeRatchetTree } from "ts-mls/ratchetTree.js";
import { bytesToBase64 } from "ts-mls/util/byteArray.js";
import { apply, seedFromGroupContext, type GroupState } from "../../src/mls/group.js";
import { hex, loadVector, suiteName, toHex, tsMlsSuite, SkipLog } from "./helpers.js";

interface Passive {
  cipher_suite: number;
  external_psks: { psk_id: string; psk: string }[];
  key_package: string;
  signature_priv: string;
  encryption_priv: string;
  init_priv: string;
  welcome: string;
  ratchet_tree: string | null;
  epochs: { proposals: string[]; commit: string }[];
}

const skips = new SkipLog();
afterAll(() => skips.report("passive"));

function pskIndex(v: Passive, state?: ClientState) {
  const ext: Record<string, Uint8Array> = {};
  for (const p of v.external_psks) ext[bytesToBase64(hex(p.psk_id))] = hex(p.psk);
  return {
    findPsk(id: { psktype: string; pskId?: Uint8Array; pskGroupId?: Uint8Array; pskEpoch?: bigint }) {
      if (id.psktype === "external") return ext[bytesToBase64(id.pskId!)];
      if (state === undefined) return undefined;
      if (id.pskEpoch === state.groupContext.epoch) return state.keySchedule.resumptionPsk;
      return state.historicalReceiverData.get(id.pskEpoch!)?.resumptionPsk;
    },
  };
}

async function runVector(v: Passive, label: string): Promise<"ok" | "skipped"> {
  const name = suiteName(v.cipher_suite);
  const cs = await tsMlsSuite(name);
  if (typeof cs === "string") {
    skips.skip(cs);
    return "skipped";
  }
  const kpMsg = decodeMlsMessage(hex(v.key_package), 0)![0] as MLSMessage & { keyPackage: never };
  const welcomeMsg = decodeMlsMessage(hex(v.welcome), 0)![0] as MLSMessage & { welcome: never };
  const tree = v.ratchet_tree === null ? undefined : decodeRatchetTree(hex(v.ratchet_tree), 0)![0];
  let client = await joinGroup(
    welcomeMsg.welcome,
    kpMsg.keyPackage,
    { initPrivateKey: hex(v.init_priv), hpkePrivateKey: hex(v.encryption_priv), signaturePrivateKey: hex(v.signature_priv) },
    pskIndex(v) as never,
    cs,
    tree,
  );
  let engine: GroupState = await seedFromGroupContext(
    { groupContext: client.groupContext, ratchetTree: encodeRatchetTree(client.ratchetTree), confirmationTag: client.confirmationTag },
    // the vectors' KeyPackages carry lifetimes from when they were generated
    { clockSkewSeconds: 1e12 },
  );
  expect(toHex(engine.groupContextBytes), label).toBe(toHex(encodeGroupContext(client.groupContext)));
  for (const [i, e] of v.epochs.entries()) {
    for (const p of e.proposals) {
      engine = await apply(engine, hex(p));
      const r = await processMessage(decodeMlsMessage(hex(p), 0)![0] as never, client, pskIndex(v, client) as never, acceptAll, cs);
      client = r.newState;
    }
    engine = await apply(engine, hex(e.commit));
    const r = await processMessage(decodeMlsMessage(hex(e.commit), 0)![0] as never, client, pskIndex(v, client) as never, acceptAll, cs);
    client = r.newState;
    expect(toHex(engine.groupContextBytes), `${label} epoch ${i}`).toBe(toHex(encodeGroupContext(client.groupContext)));
    expect(toHex(engine.tree.encode()), `${label} epoch ${i} tree`).toBe(toHex(encodeRatchetTree(client.ratchetTree)));
  }
  return "ok";
}

for (const file of ["passive-client-welcome.json", "passive-client-handling-commit.json"]) {
  describe(file, () => {
    const vs = loadVector<Passive[]>(file);
    it(`follows ${vs.length} scenarios side by side with a ts-mls client`, async () => {
      let ok = 0;
      let skipped = 0;
      for (const [i, v] of vs.entries()) {
        const r = await runVector(v, `${file}#${i} suite ${v.cipher_suite}`);
        if (r === "ok") ok++;
        else skipped++;
      }
      console.log(`[${file}] ran ${ok}, skipped ${skipped}`);
      expect(ok).toBeGreaterThan(0);
      expect(ok + skipped).toBe(vs.length);
    });
  });
}
