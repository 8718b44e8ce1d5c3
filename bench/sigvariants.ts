// Ways to verify the 10,000 leaf signatures of the cached 10,000-member group with
// node:crypto (threadpool with callbacks or promises, KeyObjects made before or per
// job from JWK or DER, or synchronously): wall and CPU, medians of 5.
//
//   npx tsx bench/sigvariants.ts          (UV_THREADPOOL_SIZE=2 npx tsx ... to compare pool sizes)
import { readFileSync } from "node:fs";
import * as c from "node:crypto";
import { decodeGroupState } from "../src/mls/state.js";
import { leafSignatureJobs, ed25519Key } from "./sigfloor.js";
const b = new Uint8Array(readFileSync("bench/.cache/group-10000.bin"));
const parts: Uint8Array[] = [];
for (let o = 0; o < b.length; ) { const len = new DataView(b.buffer, b.byteOffset + o).getUint32(0); parts.push(b.subarray(o + 4, o + 4 + len)); o += 4 + len; }
const engine = await decodeGroupState(parts[2]!);
const jobs = leafSignatureJobs(engine.tree, engine.groupContext.groupId);
const keys = jobs.map((j) => ed25519Key(j.publicKey));
const der = jobs.map((j) => Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), j.publicKey]));
type V = () => Promise<void>;
const cb = (keyOf: (i: number) => c.KeyLike | c.JsonWebKeyInput | c.VerifyKeyObjectInput): V => () => new Promise<void>((res) => { let n = jobs.length; jobs.forEach((j, i) => c.verify(null, j.message, keyOf(i) as never, j.signature, () => { if (--n === 0) res(); })); });
const variants: Record<string, V> = {
  "callbacks, KeyObjects made before": cb((i) => keys[i]!),
  "promise per job, KeyObjects made before": async () => { await Promise.all(jobs.map((j, i) => new Promise<void>((r) => c.verify(null, j.message, keys[i]!, j.signature, () => r())))); },
  "callbacks, KeyObject (JWK) per job": cb((i) => ed25519Key(jobs[i]!.publicKey)),
  "callbacks, JWK input per job": cb((i) => ({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(jobs[i]!.publicKey).toString("base64url") }, format: "jwk" })),
  "callbacks, KeyObject (DER) per job": cb((i) => c.createPublicKey({ key: der[i]!, format: "der", type: "spki" })),
  "sync, KeyObjects made before": async () => { jobs.forEach((j, i) => c.verify(null, j.message, keys[i]!, j.signature)); },
};
const res: Record<string, number[]> = {};
const cpu: Record<string, number[]> = {};
for (let r = 0; r < 5; r++) for (const [k, f] of Object.entries(variants)) { const c0 = process.cpuUsage(); const t = performance.now(); await f(); (res[k] ??= []).push(performance.now() - t); const cu = process.cpuUsage(c0); (cpu[k] ??= []).push((cu.user + cu.system) / 1000); }
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
console.log(`${jobs.length} Ed25519 verifications, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}; median wall / CPU ms of 5:`);
for (const k of Object.keys(variants)) console.log(`  ${k.padEnd(42)} ${med(res[k]!).toFixed(0).padStart(5)} / ${med(cpu[k]!).toFixed(0)}`);
