// Cost of durability: one apply() of a 1 KB queue append (its own transaction),
// WAL mode, synchronous FULL vs NORMAL, on the temp directory's file system.
// Run: npx tsx test/store/fsync-bench.ts [count]   (not part of the test suite)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openSqliteStore } from "../../src/store/sqlite/store.js";

const count = Number(process.argv[2] ?? 500);
const payload = new Uint8Array(1024).fill(7);

for (const synchronous of ["FULL", "NORMAL", "FULL", "NORMAL"] as const) {
  const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), "mimi-bench-"));
  const store = await openSqliteStore({ path: join(dir, "b.sqlite"), synchronous });
  for (let i = 0; i < 20; i++) await store.apply({ ops: [{ kind: "append", queue: "warm", payload }] });
  const lat: number[] = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    await store.apply({ ops: [{ kind: "append", queue: "q", payload }] });
    lat.push(Number(process.hrtime.bigint() - t) / 1e3);
  }
  const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
  lat.sort((a, b) => a - b);
  const pct = (p: number) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))]!.toFixed(0);
  console.log(
    `${synchronous.padEnd(6)} n=${count} ${(count / (totalMs / 1000)).toFixed(0)} appends/s  p50=${pct(50)}us p99=${pct(99)}us`,
  );
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
