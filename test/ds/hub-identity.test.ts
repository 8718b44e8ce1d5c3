// The hub's Ed25519 signatures (every DSFanoutRequest) come from node:crypto
// with the key imported once; they must be exactly ts-mls's SignWithLabel
// (Ed25519 is deterministic) and verify as before.
import { describe, expect, it } from "vitest";
import { getCiphersuiteImpl, getCiphersuiteFromName } from "ts-mls";
import { signWithLabel } from "ts-mls/crypto/signature.js";
import { FANOUT_SIGNATURE_SUITE, HubIdentity, verifyFanoutSignature } from "../../src/ds/hub-identity.js";
import { SignatureLabel } from "../../src/wire/index.js";

describe("HubIdentity signatures", () => {
  it("Ed25519 SignWithLabel equals ts-mls's, byte for byte, and verifies", async () => {
    const hub = await HubIdentity.open("hub.example");
    const content = new Uint8Array(1500).map((_, i) => i & 0xff);
    const sig = await hub.sign(FANOUT_SIGNATURE_SUITE, SignatureLabel.DSFanoutRequest, content);
    const cs = await getCiphersuiteImpl(getCiphersuiteFromName(FANOUT_SIGNATURE_SUITE));
    const reference = await signWithLabel((await hub.keyPair(FANOUT_SIGNATURE_SUITE)).signKey, SignatureLabel.DSFanoutRequest, content, cs.signature);
    expect(Buffer.from(sig).equals(Buffer.from(reference))).toBe(true);
    expect(await verifyFanoutSignature(hub.fanoutPublicKey, SignatureLabel.DSFanoutRequest, content, sig)).toBe(true);
    content[0] = content[0]! ^ 1;
    expect(await verifyFanoutSignature(hub.fanoutPublicKey, SignatureLabel.DSFanoutRequest, content, sig)).toBe(false);
  });
});
