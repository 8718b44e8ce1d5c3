import { bigMembers, Committer } from "./bench/biggroup.js";
import { seedFromGroupInfo, type GroupState } from "./src/mls/group.js";
const n = Number(process.argv[2] ?? 20000);
const people = await bigMembers(20001, "bench.example", "engine");
const c = await Committer.create(people[0]!, new TextEncoder().encode("heap"));
const { groupInfo, ratchetTree } = await c.seed(people.slice(0, n), []);
c.state = undefined;
const heap = () => { (globalThis as any).gc(); (globalThis as any).gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
const b = heap();
let held: GroupState | undefined = await seedFromGroupInfo(groupInfo, ratchetTree.slice(), { verify: "trusted" });
const a = heap();
console.log(`${n}: ${((a - b) / 1048576).toFixed(1)} MB, ${((a - b) / n).toFixed(0)} B/member; tree bytes ${(ratchetTree.length / 1048576).toFixed(1)} MB`);
const t = performance.now(); held = await seedFromGroupInfo(groupInfo, ratchetTree.slice(), { verify: "trusted" }); console.log("trusted seed ms", (performance.now() - t).toFixed(0));
void held;
if (process.argv[3] === "snap") {
  const v8 = await import("node:v8");
  const file = v8.writeHeapSnapshot("/tmp/heap20k.heapsnapshot");
  console.log(file);
}
