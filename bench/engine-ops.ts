// add-1 and path-update commits on a cached group (bench/.cache, built by
// bench/engine.ts), engine only, many runs: quick A/B of engine changes.
//
//   npx tsx --stack-size=7800 bench/engine-ops.ts [members=100] [runs=300] [add-1|path-update]
import { readFileSync } from "node:fs";
import { createCommit, encodeMlsMessage, getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { decodeKeyPackage } from "ts-mls/keyPackage.js";
import { decodeGroupState as decodeClient } from "ts-mls/clientState.js";
import { defaultClientConfig } from "ts-mls/clientConfig.js";
import { nodeCryptoProvider } from "../src/mls/crypto.js";
import { merge, processMessage } from "../src/mls/group.js";
import { decodeGroupState } from "../src/mls/state.js";

const n = Number(process.argv[2] ?? 100);
const runs = Number(process.argv[3] ?? 300);
const only = process.argv[4];
const CACHE = new URL("./.cache/", import.meta.url).pathname;

/** The length-prefixed parts of a cache file. */
function parts(file: string): Uint8Array[] {
  const b = new Uint8Array(readFileSync(file));
  const out: Uint8Array[] = [];
  for (let o = 0; o < b.length; ) {
    const len = new DataView(b.buffer, b.byteOffset + o).getUint32(0);
    out.push(b.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return out;
}

const group = parts(`${CACHE}group-${n}.bin`);
const spare = decodeKeyPackage(parts(`${CACHE}kps-${n + 1}.bin`)[4 * n]!, 0)![0]; // the KeyPackage bench/engine.ts adds
const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"), nodeCryptoProvider);
const alice = { ...decodeClient(group[0]!, 0)![0], clientConfig: defaultClientConfig };
const engine = await decodeGroupState(group[2]!);
const add = await createCommit({ state: alice, cipherSuite: cs }, { wireAsPublicMessage: true, extraProposals: [{ proposalType: "add", add: { keyPackage: spare } }] });
const upd = await createCommit({ state: alice, cipherSuite: cs }, { wireAsPublicMessage: true });
const cases: [string, Uint8Array][] = [
  ["add-1", encodeMlsMessage(add.commit)],
  ["path-update", encodeMlsMessage(upd.commit)],
];
for (const [name, bytes] of cases.filter(([k]) => only === undefined || only === k)) {
  for (let i = 0; i < 20; i++) await merge(engine, await processMessage(engine, bytes));
  const xs: number[] = [];
  const c0 = process.cpuUsage();
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await merge(engine, await processMessage(engine, bytes));
    xs.push(performance.now() - t);
  }
  const cpu = process.cpuUsage(c0);
  xs.sort((a, b) => a - b);
  const q = (f: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * f))]!.toFixed(3);
  console.log(`${name} ${n}: median ${q(0.5)} ms, p10 ${q(0.1)}, p90 ${q(0.9)}, CPU per commit ${((cpu.user + cpu.system) / 1000 / runs).toFixed(3)} ms`);
}
