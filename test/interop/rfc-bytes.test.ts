// The RFC bytes audit (docs/protocol.md "RFC 9420 bytes audit"): every
// extension and struct the DS and the SDK read, checked against bytes that an
// independent implementation made: CoreCrypto 10.3.0 (OpenMLS), recorded in
// test/interop/fixtures/corecrypto-10.3.0.json by test/interop/make-fixtures.ts.
// No CoreCrypto at run time: these are its bytes as committed.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { getCiphersuiteFromName, getCiphersuiteImpl, type GroupInfo } from "ts-mls";
import { readExternalPub } from "ts-mls/createCommit.js";
import { decodeExternalSender, decodeExternalSenders as tsMlsDecodeExternalSenders } from "ts-mls/externalSender.js";
import { decodeRequiredCapabilities } from "ts-mls/requiredCapabilities.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { DSFailure } from "../../src/ds/errors.js";
import { checkGroupInfoExtensions, decodeExternalPub } from "../../src/ds/group-info.js";
import { apply, externalSenderIndex, groupInfoBytes, groupInfoFromMlsMessage, ratchetTreeBytes, seedFromGroupInfo, type GroupState } from "../../src/mls/index.js";
import {
  decodeKeyPackageBytes,
  decodeMLSMessage,
  decodePartialGroupInfo,
  DSErrorCode,
  encodeKeyPackageBytes,
  encodeMLSMessage,
  encodePartialGroupInfo,
  isLastResort,
  readExternalSenders,
  readFanoutAuthToken,
} from "../../src/wire/index.js";
import { MimiMember } from "../../src/client/index.js";
import { groupUpdateOf, ratchetTreeOf } from "./corecrypto.js";

interface Fixture {
  corecrypto_version: string;
  hub_signature_key: string;
  key_package: { bytes: string };
  ts_mls_key_package: { bytes: string };
  hub_remove_proposal: { bytes: string };
  commits: { intent: string; commit: string; group_info: string; welcome?: string }[];
}
const fx = JSON.parse(readFileSync(join(import.meta.dirname, "fixtures", "corecrypto-10.3.0.json"), "utf8")) as Fixture;
const h = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, "hex"));
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

function groupInfoOf(i: number): GroupInfo {
  const m = decodeMLSMessage(h(fx.commits[i]!.group_info));
  if (m.wireformat !== "mls_group_info") throw new Error("not a GroupInfo");
  return m.groupInfo;
}
const ext = (exts: GroupInfo["extensions"], type: string) => exts.find((e) => e.extensionType === type);

async function seeded(): Promise<GroupState> {
  const gi = h(fx.commits[0]!.group_info);
  return seedFromGroupInfo(groupInfoFromMlsMessage(gi), ratchetTreeOf(gi));
}

function expectInvalid(fn: () => void, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DSFailure);
    expect((err as DSFailure).code).toBe(DSErrorCode.invalid_message);
    expect((err as DSFailure).message).toMatch(pattern);
    return;
  }
  throw new Error("expected invalid_message");
}

describe(`RFC 9420 bytes of CoreCrypto ${fx.corecrypto_version}`, () => {
  it("KeyPackage: re-encodes to the same bytes; no KeyPackage or leaf extensions (so no fanout_auth, not last_resort), no MIMI capabilities", () => {
    const bytes = h(fx.key_package.bytes);
    const kp = decodeKeyPackageBytes(bytes);
    expect(hex(encodeKeyPackageBytes(kp))).toBe(fx.key_package.bytes);
    expect(kp.extensions).toEqual([]);
    expect(kp.leafNode.extensions).toEqual([]);
    expect(readFanoutAuthToken(kp.extensions)).toBeUndefined();
    expect(isLastResort(kp.extensions)).toBe(false);
    expect(kp.leafNode.capabilities.extensions).toEqual([]);
    expect(new TextDecoder().decode(kp.leafNode.credential.credentialType === "basic" ? kp.leafNode.credential.identity : new Uint8Array())).toMatch(/^[0-9a-f-]{36}:[0-9a-f]+@cc\.example$/);
  });

  it("external_senders: one extension holding ExternalSender external_senders<V> (12.1.8.1); read by the DS and the patched ts-mls, misread by 1.6.4's one-sender form", () => {
    const gc = groupInfoOf(0).groupContext;
    const senders = readExternalSenders(gc.extensions)!;
    expect(senders.map((s) => hex(s.signaturePublicKey))).toEqual([fx.hub_signature_key]);
    expect(senders[0]!.credential).toEqual({ credentialType: "basic", identity: new TextEncoder().encode("wire-server") });
    const data = ext(gc.extensions, "external_senders")!.extensionData;
    expect(tsMlsDecodeExternalSenders(data, 0)?.[0].map((s) => hex(s.signaturePublicKey))).toEqual([fx.hub_signature_key]);
    // ts-mls 1.6.4 read the extension as a single ExternalSender: the vector's length byte becomes the key's.
    expect(hex(decodeExternalSender(data, 0)?.[0].signaturePublicKey ?? new Uint8Array())).not.toBe(fx.hub_signature_key);
  });

  it("the hub finds itself in a CoreCrypto group's external_senders by its signature key (the credential says wire-server)", async () => {
    const s = await seeded();
    expect(externalSenderIndex(s, h(fx.hub_signature_key))).toBe(0);
  });

  it("external_pub: opaque external_pub<V> (0x20 + 32-byte X25519 key, 12.4.3.2); the DS check and the patched ts-mls accept it, the bare key is refused by the DS", async () => {
    const s = await seeded();
    for (let i = 0; i < fx.commits.length; i++) {
      const data = ext(groupInfoOf(i).extensions, "external_pub")!.extensionData;
      expect(data.length).toBe(33);
      expect(data[0]).toBe(0x20);
      expect(hex(decodeExternalPub(data))).toBe(hex(data.subarray(1)));
      expect(hex(readExternalPub(data, "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"))).toBe(hex(data.subarray(1)));
    }
    const gi = groupInfoOf(0);
    checkGroupInfoExtensions(s, gi.extensions, "test");
    const bare = gi.extensions.map((e) => (e.extensionType === "external_pub" ? { ...e, extensionData: e.extensionData.subarray(1) } : e));
    expectInvalid(() => checkGroupInfoExtensions(s, bare, "test"), /external_pub is not RFC 9420's opaque external_pub<V>/);
  });

  it("ratchet_tree: the GroupInfo's tree is the epoch's tree as the hub encodes it; another tree is refused", async () => {
    const s = await seeded();
    expect(hex(ext(groupInfoOf(0).extensions, "ratchet_tree")!.extensionData)).toBe(hex(ratchetTreeBytes(s)));
    const other = groupInfoOf(1).extensions; // epoch 2's tree
    expectInvalid(() => checkGroupInfoExtensions(s, other, "test"), /ratchet_tree is not the ratchet tree of the epoch/);
    const twice = [...groupInfoOf(0).extensions, ext(groupInfoOf(0).extensions, "external_pub")!];
    expectInvalid(() => checkGroupInfoExtensions(s, twice, "test"), /appears twice/);
  });

  it("required_capabilities (GroupContext): decodes; CoreCrypto requires credential types basic and x509, which ts-mls members list", async () => {
    const data = ext(groupInfoOf(0).groupContext.extensions, "required_capabilities")!.extensionData;
    const [rc, len] = decodeRequiredCapabilities(data, 0)!;
    expect(len).toBe(data.length);
    expect(rc.extensionTypes).toEqual([]);
    expect(rc.proposalTypes).toEqual([]);
    expect(rc.credentialTypes).toEqual(["basic", "x509"]);
    const m = await MimiMember.create({ clientId: "6d696d69-0000-4000-8000-0000000000ab:1@ts.example" });
    const caps = (await m.generateKeyPackage()).publicPackage.leafNode.capabilities;
    expect(caps.credentials).toEqual(expect.arrayContaining(rc.credentialTypes));
  });

  it("the hub's engine follows CoreCrypto's commits (path update, Add without path, Remove, external commit, hub Remove by reference) and assembles CoreCrypto's GroupInfos byte for byte from PartialGroupInfos", async () => {
    let s = await seeded();
    expect(hex(groupInfoBytes(s)!)).toBe(hex(groupInfoFromMlsMessage(h(fx.commits[0]!.group_info))));
    for (const [i, c] of fx.commits.entries()) {
      if (i === 0) continue;
      if (c.intent === "commit_pending") s = await apply(s, h(fx.hub_remove_proposal.bytes));
      const update = groupUpdateOf({ intent: c.intent as never, groupId: new Uint8Array(), commit: h(c.commit), groupInfo: h(c.group_info) });
      // PartialGroupInfo: the DS protocol's struct around CoreCrypto's GroupInfo extensions and signature.
      const pgi = encodePartialGroupInfo(update.partialGroupInfo);
      expect(hex(encodePartialGroupInfo(decodePartialGroupInfo(pgi)))).toBe(hex(pgi));
      s = await apply(s, encodeMLSMessage(update.commit), pgi);
      expect(hex(groupInfoBytes(s)!), c.intent).toBe(hex(groupInfoFromMlsMessage(h(c.group_info))));
      checkGroupInfoExtensions(s, update.partialGroupInfo.groupInfoExtensions, c.intent);
    }
    expect(s.groupContext.epoch).toBe(5n);
  });

  it("Welcome: re-encodes to the same bytes and names the added KeyPackage by the KeyPackageRef the DS computes", async () => {
    const add = fx.commits.find((c) => c.welcome !== undefined)!;
    const w = decodeMLSMessage(h(add.welcome!));
    expect(hex(encodeMLSMessage(w))).toBe(add.welcome);
    if (w.wireformat !== "mls_welcome") throw new Error("not a Welcome");
    const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
    const ref = await makeKeyPackageRef(decodeKeyPackageBytes(h(fx.ts_mls_key_package.bytes)), cs.hash);
    expect(w.welcome.secrets.map((s) => hex(s.newMember))).toEqual([hex(ref)]);
  });
});
