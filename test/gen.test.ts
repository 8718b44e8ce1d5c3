// gen/ is committed: it must be exactly what `buf generate` makes from proto/.
import { execFile } from "node:child_process";
import { cp, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { promisify } from "node:util";
import { afterAll, expect, it } from "vitest";

const root = process.cwd();
const bin = join(root, "node_modules", ".bin");
let work: string | undefined;
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

it("gen/ matches buf generate byte for byte", async () => {
  work = await mkdtemp(join(tmpdir(), "mimi-ds-gen-"));
  await cp(join(root, "proto"), join(work, "proto"), { recursive: true });
  for (const f of ["buf.yaml", "buf.gen.yaml"]) await cp(join(root, f), join(work, f));
  // protoc-gen-es is a local plugin: found on PATH, from node_modules/.bin.
  await promisify(execFile)(join(bin, "buf"), ["generate"], {
    cwd: work,
    env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
    timeout: 60_000,
  });
  const expected = await listFiles(join(work, "gen"));
  expect(await listFiles(join(root, "gen"))).toEqual(expected);
  for (const file of expected) {
    const fresh = await readFile(join(work, "gen", file));
    const committed = await readFile(join(root, "gen", file));
    expect(committed.equals(fresh), `gen/${file} is stale: run \`make generate\``).toBe(true);
  }
});
