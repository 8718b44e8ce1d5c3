// The fuzzers of test/fuzz/lib.ts with a fixed seed and budget, in CI:
// every wire decoder and the engine's processMessage fed mutated valid
// inputs; only typed errors, canonical values, and an unchanged group state.
// Long runs: `make fuzz` (test/fuzz/run.ts).
import { describe, expect, it } from "vitest";
import { engineTarget, fuzz, wireTargets, type FuzzStats } from "./lib.js";

const SEED = 0x13_2026;
const report = (s: FuzzStats) => {
  for (const f of s.findings) console.error(f.message, f.original);
  console.log(`fuzz: ${s.inputs} inputs in ${Math.round(s.ms)} ms, ${s.findings.length} findings`, JSON.stringify(s.outcomes));
};

describe("fuzzing (fixed seed)", () => {
  it("wire decoders: WireDecodeError or a canonical value", async () => {
    const s = await fuzz(await wireTargets(), { seed: SEED, budget: () => 2_500 });
    report(s);
    expect(s.findings.map((f) => f.message)).toEqual([]);
    expect(s.inputs).toBe(13 * 2_500);
  }, 300_000);

  it("processMessage: staged or a typed error, the state unchanged", async () => {
    const s = await fuzz([await engineTarget()], { seed: SEED, budget: () => 1_500 });
    report(s);
    expect(s.findings.map((f) => f.message)).toEqual([]);
    expect(s.inputs).toBe(1_500);
  }, 300_000);
});
