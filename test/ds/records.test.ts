// Stored formats are contracts: the bytes of every record the DS keeps in the
// store are pinned here. A change to one of these encodings must be
// deliberate and come with a migration (and the old form must still read).
// `MIMI_WRITE_GOLDEN=1 npx vitest run test/ds/records.test.ts` rewrites the
// snapshot fixture (only when its format changes on purpose).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { describe, expect, it } from "vitest";
import {
  decodeEpochHistoryRecord,
  decodeEpochLogRecord,
  decodeGroupMetadata,
  encodeEpochHistoryRecord,
  encodeEpochLogRecord,
  encodeGroupMetadata,
} from "../../src/ds/records.js";
import { decodeGroupState, encodeGroupState, epochOf, memberCount, pendingProposals } from "../../src/mls/index.js";
import { Harness } from "../mls/harness.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const msg64 = new Uint8Array(64).map((_, i) => i);

describe("stored record encodings", () => {
  it("EpochLogRecord v2: version 2, the pending proposals, the commit, the PartialGroupInfo", () => {
    const record = { proposals: [Uint8Array.of(1, 2, 3), new Uint8Array(0)], message: msg64, partialGroupInfo: Uint8Array.of(9, 9) };
    const golden = "02" + "05" + "03010203" + "00" + "4040" + hex(msg64) + "01" + "020909";
    expect(hex(encodeEpochLogRecord(record))).toBe(golden);
    expect(decodeEpochLogRecord(unhex(golden))).toEqual(record);
    expect(hex(encodeEpochLogRecord({ proposals: [], message: msg64 }))).toBe("02" + "00" + "4040" + hex(msg64) + "00");
  });

  it("EpochLogRecord v1 (schema <= v4 builds) still reads, with no proposals", () => {
    const v1 = "4040" + hex(msg64) + "01" + "020909";
    expect(decodeEpochLogRecord(unhex(v1))).toEqual({ proposals: [], message: msg64, partialGroupInfo: Uint8Array.of(9, 9) });
    expect(decodeEpochLogRecord(unhex("4040" + hex(msg64) + "00"))).toEqual({ proposals: [], message: msg64 });
    expect(() => decodeEpochLogRecord(unhex("03" + "00" + "4040" + hex(msg64) + "00"))).toThrow(/version 3/);
  });

  it("EpochHistoryRecord and GroupMetadata", () => {
    const history = { groupInfo: Uint8Array.of(7), joiners: [{ keyPackageRef: Uint8Array.of(0xaa, 0xbb), leafIndex: 5, signaturePublicKey: Uint8Array.of(0xcc) }] };
    expect(hex(encodeEpochHistoryRecord(history))).toBe("0107" + "09" + "02aabb" + "00000005" + "01cc");
    expect(decodeEpochHistoryRecord(unhex("0107" + "09" + "02aabb" + "00000005" + "01cc"))).toEqual(history);
    const meta = { protocolVersion: 1, creator: "mimi://a.example/u/alice/d/1" };
    const metaHex = "0001" + "1c" + Buffer.from(meta.creator).toString("hex");
    expect(hex(encodeGroupMetadata(meta))).toBe(metaHex);
    expect(decodeGroupMetadata(unhex(metaHex))).toEqual(meta);
  });

  it("the group snapshot (version 1): a stored snapshot decodes and re-encodes to the same bytes", async () => {
    const file = join(import.meta.dirname, "..", "fixtures", "snapshot-v1.hex");
    if (process.env.MIMI_WRITE_GOLDEN === "1" || !existsSync(file)) {
      // Two members and one pending proposal: every part of the layout is present.
      const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
      const h = new Harness(cs, new TextEncoder().encode("golden@hub.example"));
      await h.create("alice");
      const bob = await h.identity("bob");
      await h.commit("alice", [{ proposalType: "add", add: { keyPackage: bob.kp } }], [bob]);
      await h.propose("bob", { proposalType: "remove", remove: { removed: h.leafOf("bob") } });
      if (process.env.CI === "true" && !existsSync(file)) throw new Error(`${file} is missing`);
      writeFileSync(file, hex(encodeGroupState(h.engine)) + "\n");
    }
    const golden = unhex(readFileSync(file, "utf8").trim());
    expect(golden[0]).toBe(1);
    const state = await decodeGroupState(golden);
    expect(epochOf(state)).toBe(1n);
    expect(memberCount(state)).toBe(2);
    expect(pendingProposals(state)).toHaveLength(1);
    expect(state.groupContext.cipherSuite).toBe("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519");
    expect(hex(encodeGroupState(state))).toBe(hex(golden));
  });
});
