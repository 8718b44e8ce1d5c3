// Client identifiers, domains, and the RFC 9420 form of external_senders.
import { describe, it, expect } from "vitest";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { credentialEncoder } from "ts-mls/credential.js";
import { externalSenderEncoder } from "ts-mls/externalSender.js";
import { clientIdOf, domainOf } from "../../src/mls/identity.js";
import { concat, decodeExternalSendersExtension, varLen } from "../../src/mls/codec.js";
import { EngineError } from "../../src/mls/errors.js";

const te = new TextEncoder();

describe("client identifiers and domains", () => {
  it("reads basic credentials as UTF-8 and finds the domain", () => {
    expect(clientIdOf({ credentialType: "basic", identity: te.encode("alice:phone@example.com") })).toBe("alice:phone@example.com");
    expect(clientIdOf({ credentialType: "basic", identity: Uint8Array.of(0xff, 0xfe) })).toBe("hex:fffe");
    expect(domainOf("alice:phone@example.com")).toBe("example.com");
    expect(domainOf("alice@Example.COM")).toBe("example.com");
    expect(domainOf("mimi://example.com/u/alice/d/phone")).toBe("example.com");
    expect(domainOf("mimi://EXAMPLE.com:8443/u/alice")).toBe("example.com");
    expect(domainOf("alice")).toBeUndefined();
    expect(domainOf("alice@")).toBeUndefined();
    expect(domainOf("mimi:///nohost")).toBeUndefined();
  });
});

describe("external_senders (RFC 9420 12.1.8.1)", () => {
  const sender = (k: number, id: string) => concat(varLen(new Uint8Array(32).fill(k)), encode(credentialEncoder)({ credentialType: "basic", identity: te.encode(id) }));
  it("decodes the vector form", () => {
    const list = decodeExternalSendersExtension(varLen(concat(sender(1, "ds.a.example"), sender(2, "ds.b.example"))));
    expect(list.map((s) => s.signaturePublicKey[0])).toEqual([1, 2]);
    expect(list.map((s) => clientIdOf(s.credential))).toEqual(["ds.a.example", "ds.b.example"]);
    expect(decodeExternalSendersExtension(varLen(new Uint8Array()))).toEqual([]);
  });
  it("rejects ts-mls 1.6.4's single-sender form", () => {
    const wrong = encode(externalSenderEncoder)({ signaturePublicKey: new Uint8Array(32).fill(1), credential: { credentialType: "basic", identity: te.encode("ds.a.example") } });
    expect(() => decodeExternalSendersExtension(wrong)).toThrow(EngineError);
  });
});
