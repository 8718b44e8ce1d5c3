import { describe, expect, test } from "vitest";
import {
  APP_DATA_DICTIONARY_EXTENSION_TYPE,
  DSExtensionType,
  Encoder,
  LAST_RESORT_COMPONENT_ID,
  WireEncodeError,
  appDataDictionaryCodec,
  decodeKeyPackageBytes,
  encodeKeyPackageBytes,
  encodeWith,
  isLastResort,
  makeDSProtocolVersionExtension,
  makeDSSupportedVersionsExtension,
  makeExternalJoinPolicyExtension,
  makeFanoutAuthExtension,
  readDSProtocolVersion,
  readExternalJoinPolicy,
  readDSSupportedVersions,
  readFanoutAuthToken,
  utf8V,
  WireDecodeError,
} from "../../src/wire/index.js";
import { mlsFixtures } from "./fixtures.js";

const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("DS extensions", () => {
  test("codepoints are in the private-use range", () => {
    expect(DSExtensionType).toEqual({ fanout_auth: 0xf0a1, ds_protocol_version: 0xf0a2, ds_supported_versions: 0xf0a3, last_resort: 0xf0a4, external_join_policy: 0xf0a5 });
    for (const v of Object.values(DSExtensionType)) expect(v >= 0xf000 && v <= 0xffff).toBe(true);
  });

  test("external_join_policy: one byte, fixed values; unknown values read as the narrower resync_only", () => {
    expect(makeExternalJoinPolicyExtension("open")).toEqual({ extensionType: 0xf0a5, extensionData: Uint8Array.of(1) });
    expect(makeExternalJoinPolicyExtension("resync_only")).toEqual({ extensionType: 0xf0a5, extensionData: Uint8Array.of(0) });
    expect(readExternalJoinPolicy([makeExternalJoinPolicyExtension("open")])).toBe("open");
    expect(readExternalJoinPolicy([])).toBeUndefined();
    expect(readExternalJoinPolicy([{ extensionType: 0xf0a5, extensionData: Uint8Array.of(7) }])).toBe("resync_only");
    expect(() => readExternalJoinPolicy([{ extensionType: 0xf0a5, extensionData: Uint8Array.of(1, 1) }])).toThrow(WireDecodeError);
  });

  test("fanout_auth and last_resort survive a real KeyPackage round trip", async () => {
    const f = await mlsFixtures();
    const carol = decodeKeyPackageBytes(encodeKeyPackageBytes(f.keyPackages[2]!));
    expect(readFanoutAuthToken(carol.extensions)).toEqual({ token: Uint8Array.of(1, 2, 3) });
    expect(isLastResort(carol.extensions)).toBe(true);
    const alice = f.keyPackages[0]!;
    expect(readFanoutAuthToken(alice.extensions)).toBeUndefined();
    expect(isLastResort(alice.extensions)).toBe(false);
  });

  test("fanout_auth extension_data is a FanoutAuthToken", () => {
    const ext = makeFanoutAuthExtension({ token: Uint8Array.of(0xaa, 0xbb) });
    expect(ext.extensionType).toBe(0xf0a1);
    expect(toHex(ext.extensionData)).toBe("02aabb");
  });

  test("ds_protocol_version and ds_supported_versions", () => {
    const v = makeDSProtocolVersionExtension(1);
    expect(toHex(v.extensionData)).toBe("0001");
    expect(readDSProtocolVersion([v])).toBe(1);
    expect(readDSProtocolVersion([])).toBeUndefined();
    const s = makeDSSupportedVersionsExtension([1, 2]);
    expect(toHex(s.extensionData)).toBe("0400010002");
    expect(readDSSupportedVersions([v, s])).toEqual([1, 2]);
    expect(() => readDSProtocolVersion([{ extensionType: 0xf0a2, extensionData: Uint8Array.of(0, 1, 0) }])).toThrow(/trailing/);
  });

  test("last resort in draft-ietf-mls-extensions component form", () => {
    const dict = encodeWith(appDataDictionaryCodec, [{ componentId: LAST_RESORT_COMPONENT_ID, data: new Uint8Array(0) }]);
    expect(toHex(dict)).toBe("03000400");
    expect(isLastResort([{ extensionType: APP_DATA_DICTIONARY_EXTENSION_TYPE, extensionData: dict }])).toBe(true);
    const other = encodeWith(appDataDictionaryCodec, [{ componentId: 0x8001, data: Uint8Array.of(1) }]);
    expect(isLastResort([{ extensionType: APP_DATA_DICTIONARY_EXTENSION_TYPE, extensionData: other }])).toBe(false);
  });
});

describe("encoder range checks", () => {
  test("integers out of range and ill-formed strings are refused", () => {
    const e = new Encoder();
    expect(() => e.uint8(256)).toThrow(WireEncodeError);
    expect(() => e.uint16(-1)).toThrow(WireEncodeError);
    expect(() => e.uint32(2 ** 32)).toThrow(WireEncodeError);
    expect(() => e.uint32(1.5)).toThrow(WireEncodeError);
    expect(() => e.uint64(1n << 64n)).toThrow(WireEncodeError);
    expect(() => e.varint(2 ** 30)).toThrow(WireEncodeError);
    expect(() => encodeWith(utf8V, "a\uD800b")).toThrow(/surrogate/);
    expect(toHex(encodeWith(utf8V, "é😀"))).toBe("06c3a9f09f9880");
  });

  test("nested vectors that grow past one-byte headers are shifted correctly", () => {
    const e = new Encoder(16);
    e.vector(() => {
      e.vector(() => e.bytes(new Uint8Array(70).fill(1)));
      e.bytes(new Uint8Array(20000).fill(2));
    });
    const out = e.finish();
    expect(toHex(out.subarray(0, 4))).toBe("80004e68"); // 2 + 70 + 20000 = 20072 = 0x4e68
    expect(toHex(out.subarray(4, 6))).toBe("4046");
    expect(out[6]).toBe(1);
    expect(out[76]).toBe(2);
    expect(out.length).toBe(4 + 20072);
  });
});
