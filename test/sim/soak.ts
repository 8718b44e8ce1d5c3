// Long runs of the fault simulation: `make soak SEED=7 STEPS=2000` (or
// SEEDS=1-20 for a range), e.g. to reproduce a seed that failed in CI.
// Run with tsx from the project root; prints one line per step with PROGRESS=1.
import { runSimulation } from "./driver.js";

const env = process.env;
const steps = Number(env.STEPS || 500);
const seeds: number[] = [];
for (const part of (env.SEEDS || env.SEED || String(Date.now() % 100000)).split(",")) {
  const m = /^(\d+)-(\d+)$/.exec(part.trim());
  if (m) for (let s = Number(m[1]); s <= Number(m[2]); s++) seeds.push(s);
  else seeds.push(Number(part));
}
const serveArgs = (env.SERVE_ARGS || "").split(/\s+/).filter((a) => a.length > 0);

let failed = 0;
for (const seed of seeds) {
  try {
    const r = await runSimulation({ seed, steps, serveArgs, ...(env.PROGRESS === "1" ? { onStep: (s: number, l: string) => console.log(`  ${s}: ${l}`) } : {}) });
    console.log(`seed ${seed}: ${r.steps} steps in ${(r.ms / 1000).toFixed(1)} s, ${r.delivered} queue entries checked, ops ${JSON.stringify(r.ops)}`);
  } catch (err) {
    failed++;
    console.error((err as Error).message);
  }
}
console.log(`${seeds.length - failed} of ${seeds.length} seeds passed (${steps} steps each${serveArgs.length > 0 ? `, serve ${serveArgs.join(" ")}` : ""})`);
process.exit(failed > 0 ? 1 : 0);
