// The allocation-free counters and histograms (src/server/fast-metrics.ts)
// against prom-client's own Counter and Histogram as the oracle: the same
// seeded random observations give the same exposition, line for line.
import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { FastCounter, FastHistogram } from "../../src/server/fast-metrics.js";

function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe("fast metrics", () => {
  it.each([1, 2, 3])("expose what prom-client exposes for the same observations (seed %i)", async (seed) => {
    const rnd = random(seed);
    const buckets = [0.001, 0.01, 0.1, 1, 10];
    const oracle = new Registry();
    const fast = new Registry();
    const oc = new Counter({ name: "c_total", help: "h", labelNames: ["a", "b"], registers: [oracle] });
    const oh = new Histogram({ name: "h_seconds", help: "h", labelNames: ["op"], buckets, registers: [oracle] });
    const fc = new FastCounter("c_total", "h", ["a", "b"], fast);
    const fh = new FastHistogram("h_seconds", "h", ["op"], [10, 1, 0.1, 0.01, 0.001], fast);
    const ops = ["apply", "read", "loadGroup"];
    for (let i = 0; i < 2000; i++) {
      const a = `x${Math.floor(rnd() * 3)}`;
      const b = `y${Math.floor(rnd() * 2)}`;
      const n = Math.floor(rnd() * 3) + 1;
      oc.inc({ a, b }, n);
      fc.child(a, b).inc(n);
      const op = ops[Math.floor(rnd() * ops.length)]!;
      // Values on bucket bounds too: a value equal to a bound counts in that bucket.
      const v = rnd() < 0.1 ? buckets[Math.floor(rnd() * buckets.length)]! : rnd() ** 4 * 20;
      oh.observe({ op }, v);
      fh.child(op).observe(v);
    }
    const lines = async (r: Registry) => (await r.metrics()).split("\n").filter((l) => l !== "").sort();
    const want = await lines(oracle);
    const got = await lines(fast);
    // Sums are added in the same order; compare numerically to be safe about float formatting.
    expect(got.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) {
      const [wName, wValue] = [want[i]!.replace(/ \S+$/, ""), want[i]!.split(" ").pop()!];
      const [gName, gValue] = [got[i]!.replace(/ \S+$/, ""), got[i]!.split(" ").pop()!];
      expect(gName).toBe(wName);
      if (wName.startsWith("#")) expect(got[i]).toBe(want[i]);
      else expect(Number(gValue)).toBeCloseTo(Number(wValue), 9);
    }
  });

  it("refuses a child with the wrong number of label values, and a second metric of one name", () => {
    const r = new Registry();
    const c = new FastCounter("x_total", "h", ["a"], r);
    expect(() => c.child()).toThrow(/wants 1 label values/);
    expect(() => new FastCounter("x_total", "h", [], r)).toThrow(/already been registered/);
  });
});
