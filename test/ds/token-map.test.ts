// The persistent token map of a hosted group (src/ds/token-map.ts): against a
// plain Map under random changes, and every earlier version stays as it was.
import { describe, expect, it } from "vitest";
import { changedTokens, TokenMap } from "../../src/ds/token-map.js";
import { prng } from "../helpers/prng.js";

describe("TokenMap", () => {
  it("behaves as a Map under random changes and keeps every earlier version (seeded)", () => {
    const random = prng(7);
    const token = (n: number) => Uint8Array.of(n & 0xff, (n >> 8) & 0xff);
    let model = new Map<string, Uint8Array>(Array.from({ length: 500 }, (_, i) => [`c${i}`, token(i)]));
    let current: ReadonlyMap<string, Uint8Array> = new Map(model); // as loaded from the store: a plain Map
    const versions: { map: ReadonlyMap<string, Uint8Array>; model: Map<string, Uint8Array> }[] = [];
    for (let step = 0; step < 300; step++) {
      const remove = Array.from({ length: Math.floor(random() * 4) }, () => `c${Math.floor(random() * 700)}`);
      const set = Array.from({ length: Math.floor(random() * 4) }, () => [`c${Math.floor(random() * 700)}`, token(step)] as const);
      const next = changedTokens(current, remove, set);
      const nextModel = new Map(model);
      for (const k of remove) nextModel.delete(k);
      for (const [k, v] of set) nextModel.set(k, v);
      expect(next).toBeInstanceOf(TokenMap);
      versions.push({ map: current, model });
      current = next;
      model = nextModel;
    }
    versions.push({ map: current, model });
    for (const v of versions) {
      expect(v.map.size).toBe(v.model.size);
      expect(new Map(v.map)).toEqual(v.model);
      for (const [k, t] of v.model) expect(v.map.get(k)).toEqual(t);
      expect(v.map.has("nobody")).toBe(false);
    }
  });
});
