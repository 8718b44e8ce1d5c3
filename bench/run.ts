// `make bench`: every benchmark, one table, and a JSON record in
// bench/results/<timestamp>.json (gitignored).
//
//   node dist/bench/run.js                 # full: rpc (5 x 5 s per log level), commit (100, 1,000, 100,000 members), engine (100, 1,000, 100,000), federation
//   node dist/bench/run.js --quick         # shorter runs, fewer repetitions
//   node dist/bench/run.js --only=rpc,commit,federation
//   (options of the single benches pass through: --reps=N --duration=S --sizes=100,1000 --loadgen=node
//    --configs=1000x3,100x3 --messages=M ...)
//
// Numbers are medians over repetitions, with the same run's baselines
// (no-op RPC, ts-mls member); nothing here asserts a target.
import { spawn } from "node:child_process";
import { cpus, totalmem } from "node:os";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { commitTable, parseCommitArgs, runCommitBench, type CommitResult } from "./commit.js";
import { log, repoRoot } from "./lib.js";
import { federationTable, parseFederationArgs, runFederationBench, type FederationResult } from "./federation.js";
import { parseRpcArgs, rpcTable, runRpcBench, type RpcResult } from "./rpc.js";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const only = args.find((a) => a.startsWith("--only="))?.slice(7).split(",");
const wants = (name: string): boolean => only === undefined || only.includes(name);

interface EngineResult {
  readonly ran: boolean;
  readonly output?: string;
  readonly note?: string;
}

/** The engine bench (bench/engine.ts, another module) when it exists in this build: its own output. */
async function runEngine(): Promise<EngineResult> {
  const built = join(repoRoot, "dist", "bench", "engine.js");
  if (!existsSync(join(repoRoot, "bench", "engine.ts")) || !existsSync(built)) return { ran: false, note: "bench/engine.ts not present in this build" };
  // The full run includes the 100,000-member synthetic group (bench/biggroup.ts; its KeyPackages are cached).
  const extra = quick ? ["--sizes=100"] : ["--huge"];
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ["--expose-gc", built, ...extra], { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (d) => (out += String(d)));
    p.once("exit", (code) => resolve(code === 0 ? { ran: true, output: out.trim() } : { ran: false, output: out.trim(), note: `engine bench exited ${code}` }));
  });
}

const started = new Date();
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? "unknown",
  memGB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  platform: `${process.platform} ${process.arch}`,
};
log(`machine: ${machine.cpus} x ${machine.cpuModel}, ${machine.memGB} GB, node ${machine.node}${quick ? " (quick mode)" : ""}`);

let rpc: RpcResult | undefined;
let commit: CommitResult | undefined;
let engine: EngineResult | undefined;
let federation: FederationResult | undefined;
if (wants("rpc")) rpc = await runRpcBench(parseRpcArgs(args));
if (wants("commit")) commit = await runCommitBench(parseCommitArgs(args));
if (wants("engine")) engine = await runEngine();
if (wants("federation")) federation = await runFederationBench(parseFederationArgs(args));

const sections: string[] = [];
if (rpc !== undefined) sections.push(rpcTable(rpc));
if (commit !== undefined) sections.push(commitTable(commit));
if (engine !== undefined) sections.push(engine.output ?? `engine: ${engine.note}`);
if (federation !== undefined) sections.push(federationTable(federation));
console.log(`\n${sections.join("\n\n")}`);

const dir = join(repoRoot, "bench", "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `${started.toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify({ started: started.toISOString(), quick, args, machine, rpc, commit, engine, federation }, null, 2));
console.log(`\nresults: ${file}`);
