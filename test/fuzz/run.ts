// `make fuzz`: long fuzzing runs of test/fuzz/lib.ts outside vitest.
//   FUZZ_INPUTS         total inputs (default 10,000,000)
//   FUZZ_ENGINE_INPUTS  of those, for processMessage (default 100,000: it is ~1,000x slower per input)
//   FUZZ_SEED           seed (default 1); the run is reproducible for a seed and budget
//   FUZZ_OUT            directory for findings (default fuzz-findings/), one hex file each
// Prints progress and a summary; exits 1 when there are findings.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { engineTarget, fuzz, wireTargets, type FuzzStats } from "./lib.js";

const total = Number(process.env.FUZZ_INPUTS ?? 10_000_000);
const engineInputs = Math.min(total, Number(process.env.FUZZ_ENGINE_INPUTS ?? 100_000));
const seed = Number(process.env.FUZZ_SEED ?? 1);
const out = process.env.FUZZ_OUT ?? "fuzz-findings";

const wire = await wireTargets(seed);
const engine = await engineTarget();
const perWire = Math.ceil((total - engineInputs) / wire.length);
const started = Date.now();
const progress = (s: FuzzStats) =>
  console.log(`${new Date().toISOString()} ${s.inputs} inputs, ${s.findings.length} findings, ${Math.round(s.inputs / (s.ms / 1000))}/s`);
console.log(`fuzz: seed ${seed}, ${perWire} inputs for each of ${wire.length} decoders, ${engineInputs} for processMessage`);
const results = [
  await fuzz(wire, { seed, budget: () => perWire, maxFindings: 50, onProgress: progress, progressEvery: 500_000 }),
  await fuzz([engine], { seed, budget: () => engineInputs, maxFindings: 50, onProgress: progress, progressEvery: 10_000 }),
];
const inputs = results.reduce((n, r) => n + r.inputs, 0);
const findings = results.flatMap((r) => r.findings);
if (findings.length > 0) {
  await mkdir(out, { recursive: true });
  for (const [i, f] of findings.entries()) {
    await writeFile(join(out, `${f.target}-${i}.hex`), `${Buffer.from(f.input).toString("hex")}\n# ${f.message}\n`);
  }
}
console.log(
  `fuzz done: ${inputs} inputs in ${Math.round((Date.now() - started) / 1000)} s, ${findings.length} findings` +
    (findings.length > 0 ? ` (written to ${out}/)` : ""),
);
for (const r of results) console.log(JSON.stringify(r.outcomes));
for (const f of findings) console.log(f.message);
process.exit(findings.length > 0 ? 1 : 0);
