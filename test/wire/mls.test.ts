import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { encodeExternalSender } from "ts-mls";
import { encodeFramedContentTBS as tsEncodeFramedContentTBS } from "ts-mls/framedContent.js";
import type { ExternalSender } from "ts-mls";
import type { Codec } from "../../src/wire/index.js";
import {
  SELF_REMOVE_PROPOSAL_TYPE,
  WireDecodeError,
  addCodec,
  commitCodec,
  decodeExternalSenders,
  decodeMLSMessage,
  decodeWith,
  encodeExternalSenders,
  encodeFramedContentTBS,
  type FramedContentTBS,
  encodeMLSMessage,
  encodeWith,
  externalInitCodec,
  groupContextExtensionsCodec,
  groupSecretsCodec,
  isSelfRemoveProposal,
  makeExternalSendersExtension,
  mlsMessageCodec,
  preSharedKeyCodec,
  proposalCodec,
  ratchetTreeCodec,
  reInitCodec,
  readExternalSenders,
  removeCodec,
  selfRemoveProposal,
  updateCodec,
} from "../../src/wire/index.js";
import { mlsFixtures } from "./fixtures.js";

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

type Vector = Record<string, string>;
const vectors = JSON.parse(readFileSync("/work/shared/vectors/messages.json", "utf8")) as Vector[];

const codecs: Record<string, Codec<unknown>> = {
  mls_welcome: mlsMessageCodec,
  mls_group_info: mlsMessageCodec,
  mls_key_package: mlsMessageCodec,
  ratchet_tree: ratchetTreeCodec,
  group_secrets: groupSecretsCodec,
  add_proposal: addCodec,
  update_proposal: updateCodec,
  remove_proposal: removeCodec,
  pre_shared_key_proposal: preSharedKeyCodec,
  re_init_proposal: reInitCodec,
  external_init_proposal: externalInitCodec,
  group_context_extensions_proposal: groupContextExtensionsCodec,
  commit: commitCodec,
  public_message_application: mlsMessageCodec,
  public_message_proposal: mlsMessageCodec,
  public_message_commit: mlsMessageCodec,
  private_message: mlsMessageCodec,
} as Record<string, Codec<unknown>>;

const expectedWireFormat: Record<string, string> = {
  mls_welcome: "mls_welcome",
  mls_group_info: "mls_group_info",
  mls_key_package: "mls_key_package",
  public_message_application: "mls_public_message",
  public_message_proposal: "mls_public_message",
  public_message_commit: "mls_public_message",
  private_message: "mls_private_message",
};

describe("messages.json vectors", () => {
  test("every vector has every field we know", () => {
    expect(vectors.length).toBeGreaterThan(0);
    for (const v of vectors) expect(Object.keys(v).sort()).toEqual(Object.keys(codecs).sort());
  });

  for (const [field, codec] of Object.entries(codecs)) {
    test(`${field}: decode and re-encode byte-identically (${vectors.length} vectors)`, () => {
      for (const v of vectors) {
        const bytes = hex(v[field]!);
        const value = decodeWith(codec, bytes, field);
        expect(toHex(encodeWith(codec, value))).toBe(v[field]);
        const wf = expectedWireFormat[field];
        if (wf !== undefined) expect((value as { wireformat: string }).wireformat).toBe(wf);
      }
    });
  }

  test("public_message_* carry the content type their name says", () => {
    for (const v of vectors.slice(0, 20)) {
      for (const [field, ct] of [
        ["public_message_application", "application"],
        ["public_message_proposal", "proposal"],
        ["public_message_commit", "commit"],
      ] as const) {
        const m = decodeMLSMessage(hex(v[field]!));
        if (m.wireformat !== "mls_public_message") throw new Error("wire format");
        expect(m.publicMessage.content.contentType).toBe(ct);
      }
    }
  });
});

describe("ts-mls fixtures through the wrappers", () => {
  test("every fixture MLSMessage round-trips byte-identically", async () => {
    const f = await mlsFixtures();
    for (const m of f.messages) {
      const bytes = encodeMLSMessage(m);
      const back = decodeMLSMessage(bytes);
      expect(toHex(encodeMLSMessage(back))).toBe(toHex(bytes));
    }
  });

  test("a ratchet tree round-trips", async () => {
    const f = await mlsFixtures();
    const bytes = encodeWith(ratchetTreeCodec, f.ratchetTree);
    expect(toHex(encodeWith(ratchetTreeCodec, decodeWith(ratchetTreeCodec, bytes, "t")))).toBe(toHex(bytes));
  });
});

describe("SelfRemove (draft-ietf-mls-extensions, 0x000a)", () => {
  test("a SelfRemove Proposal is the bare proposal type on the wire", () => {
    const b = encodeWith(proposalCodec, selfRemoveProposal());
    expect(toHex(b)).toBe("000a");
    expect(isSelfRemoveProposal(decodeWith(proposalCodec, b, "Proposal"))).toBe(true);
    expect(SELF_REMOVE_PROPOSAL_TYPE).toBe(10);
  });

  test("a PublicMessage carrying SelfRemove has no proposal_data length byte and round-trips", async () => {
    const f = await mlsFixtures();
    const bytes = encodeMLSMessage(f.selfRemove);
    const m = decodeMLSMessage(bytes);
    if (m.wireformat !== "mls_public_message" || m.publicMessage.content.contentType !== "proposal") {
      throw new Error("expected a public proposal");
    }
    expect(isSelfRemoveProposal(m.publicMessage.content.proposal)).toBe(true);
    expect(toHex(encodeMLSMessage(m))).toBe(toHex(bytes));
    // The proposal type is followed directly by the signature<V>, not by a 0x00 length.
    const sig = m.publicMessage.auth.signature;
    const at = toHex(bytes).indexOf("000a" + sig.length.toString(16).padStart(2, "0"));
    expect(at).toBeGreaterThan(0);
  });

  test("FramedContentTBS of a SelfRemove has no proposal_data length; others match ts-mls", async () => {
    const f = await mlsFixtures();
    const tbsOf = (m: typeof f.selfRemove) => {
      if (m.wireformat !== "mls_public_message") throw new Error("public");
      const context = { version: "mls10", cipherSuite: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519", groupId: Uint8Array.of(1), epoch: 1n, treeHash: Uint8Array.of(2), confirmedTranscriptHash: Uint8Array.of(3), extensions: [] } as const;
      return { protocolVersion: "mls10", wireformat: "mls_public_message", content: m.publicMessage.content, senderType: "member", context } as unknown as FramedContentTBS;
    };
    const sr = tbsOf(f.selfRemove);
    const ours = encodeFramedContentTBS(sr);
    const theirs = tsEncodeFramedContentTBS(sr);
    expect(ours.length).toBe(theirs.length - 1);
    const rm = tbsOf(f.proposal);
    expect(toHex(encodeFramedContentTBS(rm))).toBe(toHex(tsEncodeFramedContentTBS(rm)));
  });

  test("a SelfRemove PublicMessage with a non-minimal authenticated_data length is malformed, not an encode failure", async () => {
    const f = await mlsFixtures();
    const b = encodeMLSMessage(f.selfRemove);
    // version(2) wire_format(2) group_id<V> epoch(8) sender(1 + 4) authenticated_data<V>
    const adAt = 4 + 1 + b[4]! + 8 + 5;
    expect(b[adAt]).toBe(0);
    // The empty authenticated_data as a two-byte length (0x4000), and one more byte so that
    // ts-mls, no longer seeing a SelfRemove, reads the rest as proposal_data<V> + signature + tag.
    const mutated = Uint8Array.from([...b.subarray(0, adAt), 0x40, 0x00, ...b.subarray(adAt + 1), 0]);
    let err: unknown;
    try {
      decodeMLSMessage(mutated);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(WireDecodeError);
    expect((err as WireDecodeError).kind).toBe("malformed");
  });

  test("a SelfRemove with data cannot be encoded", () => {
    expect(() =>
      encodeWith(proposalCodec, { proposalType: SELF_REMOVE_PROPOSAL_TYPE, proposalData: Uint8Array.of(1) }),
    ).toThrow(/no data/);
  });
});

describe("external_senders in RFC 9420 form", () => {
  const senders: ExternalSender[] = [
    { signaturePublicKey: new Uint8Array(32).fill(7), credential: { credentialType: "basic", identity: new TextEncoder().encode("a.example") } },
    { signaturePublicKey: new Uint8Array(32).fill(9), credential: { credentialType: "basic", identity: new TextEncoder().encode("b.example") } },
  ];

  test("is a vector of ExternalSender", () => {
    const data = encodeExternalSenders(senders);
    const inner = Buffer.concat(senders.map((s) => Buffer.from(encodeExternalSender(s))));
    // 90 bytes of senders: a two-byte varint header 0x40 0x5a, then the senders back to back.
    expect(inner.length).toBe(90);
    expect([...data.subarray(0, 2)]).toEqual([0x40, 90]);
    expect(toHex(data.subarray(2))).toBe(inner.toString("hex"));
    expect(decodeExternalSenders(data)).toEqual(senders);
  });

  test("the ts-mls 1.6.4 one-sender form is rejected", () => {
    const tsMlsForm = encodeExternalSender(senders[0]!);
    expect(() => decodeExternalSenders(tsMlsForm)).toThrow(WireDecodeError);
  });

  test("readExternalSenders finds the extension by number", () => {
    const ext = makeExternalSendersExtension(senders);
    expect(readExternalSenders([ext])).toEqual(senders);
    expect(readExternalSenders([{ extensionType: 5, extensionData: ext.extensionData }])).toEqual(senders);
    expect(readExternalSenders([])).toBeUndefined();
    expect(() => readExternalSenders([ext, ext])).toThrow(/duplicate/);
  });
});
