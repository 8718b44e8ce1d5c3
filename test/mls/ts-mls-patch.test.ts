// The ts-mls patch's vector encoder (patches/ts-mls+1.6.4.patch, docs/engine.md
// "ts-mls patch" 6): vectors of any length encode without deep recursion, to
// the same bytes as an element-by-element encoding.
import { describe, expect, it } from "vitest";
import { encode } from "ts-mls/codec/tlsEncoder.js";
import { varLenDataEncoder, varLenTypeEncoder } from "ts-mls/codec/variableLength.js";
import { encodeWith, opaqueV } from "../../src/wire/index.js";

describe("ts-mls vector encoder (patched)", () => {
  it("encodes 200,000 elements (1.6.4 overflowed the stack at about 10,000) to the bytes of a plain concatenation", () => {
    const items = Array.from({ length: 200_000 }, (_, i) => Uint8Array.of(i & 0xff, (i >> 8) & 0xff, i % 3));
    const bytes = encode(varLenTypeEncoder(varLenDataEncoder))(items);
    // Each element is opaque<V> (one length byte, its bytes); the whole is opaque<V> of their concatenation.
    const body = new Uint8Array(items.length * 4);
    items.forEach((x, i) => body.set([3, ...x], i * 4));
    expect(Buffer.from(bytes).equals(Buffer.from(encodeWith(opaqueV, body)))).toBe(true);
  });
});
