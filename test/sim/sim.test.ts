// The fault simulation in CI: a fixed budget of seeds and steps over two real
// `serve` processes (docs/testing.md). A failure prints the seed, the command
// that reproduces it and the trace. Long runs: `make soak SEED=.. STEPS=..`.
import { describe, expect, it } from "vitest";
import { runSimulation } from "./driver.js";

const runs: { seed: number; steps: number; serveArgs: string[] }[] = [
  // A tiny group cache (every request reloads from the store) and a snapshot after every commit.
  { seed: 1, steps: 70, serveArgs: ["--max-cached-groups", "1", "--snapshot-interval", "1"] },
  { seed: 2, steps: 70, serveArgs: [] },
  { seed: 3, steps: 70, serveArgs: ["--max-cached-groups", "2"] },
  { seed: 4, steps: 70, serveArgs: ["--snapshot-interval", "3"] },
];

describe("fault simulation", () => {
  for (const r of runs) {
    it(`seed ${r.seed}, ${r.steps} steps${r.serveArgs.length > 0 ? ` (${r.serveArgs.join(" ")})` : ""}`, async () => {
      const report = await runSimulation(r);
      console.log(`sim seed ${report.seed}: ${report.steps} steps in ${report.ms} ms, ${report.delivered} queue entries checked; ops ${JSON.stringify(report.ops)}`);
      expect(report.steps).toBe(r.steps);
    }, 300_000);
  }
});
