// The SDK as a package, as a consumer gets it: the package is built (tsc, as
// `make build`), `npm pack` must ship every file its "exports" name, and
// examples/quickstart.ts, copied into an app outside the repository that
// depends on it, is type-checked against the package's .d.ts files
// (mimi-ds/client) and run with plain node against a real `serve` over TLS.
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

const run = promisify(execFile);
const root = process.cwd();
const tsc = join(root, "node_modules", ".bin", "tsc");
const domain = "localhost";

let work: string;
let ca: DevCa;
let serve: ServeProcess;
const timings: Record<string, number> = {};

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await fn();
  } finally {
    timings[name] = Math.round(performance.now() - started);
  }
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "mimi-ds-pkg-"));
  const pkg = join(work, "pkg");
  await mkdir(pkg);
  await cp(join(root, "package.json"), join(pkg, "package.json"));
  await cp(join(root, "patches"), join(pkg, "patches"), { recursive: true });
  await symlink(join(root, "node_modules"), join(pkg, "node_modules"), "dir");
  // The build of `make build`, limited to what the package ships (src and gen).
  // Next to the package's node_modules, so that @types resolve as in the repository.
  await writeFile(
    join(pkg, "tsconfig.build.json"),
    JSON.stringify({
      extends: join(root, "tsconfig.json"),
      compilerOptions: { rootDir: root, outDir: join(pkg, "dist"), sourceMap: false },
      include: [join(root, "src"), join(root, "gen")],
    }),
  );
  await timed("build", () => run(tsc, ["-p", join(pkg, "tsconfig.build.json")], { timeout: 300_000 }));
  ca = await makeDevCa([domain]);
  serve = await spawnServe({ domain, dataDir: join(work, "data"), certsDir: ca.dir });
});

afterAll(async () => {
  await serve?.stop();
  await ca?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
  console.log(`package test timings (ms): ${JSON.stringify(timings)}`);
});

describe("the mimi-ds package", () => {
  it("npm pack ships every file named by exports (JS and types)", async () => {
    const { stdout } = await timed("pack", () =>
      run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: join(work, "pkg"), timeout: 120_000 }),
    );
    const files = new Set((JSON.parse(stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path));
    const manifest = JSON.parse(await readFile(join(root, "package.json"), "utf8")) as {
      exports: Record<string, string | Record<string, string>>;
    };
    for (const [entry, target] of Object.entries(manifest.exports)) {
      const targets = typeof target === "string" ? [target] : Object.values(target);
      for (const t of targets) expect(files.has(t.replace(/^\.\//, "")), `${entry} -> ${t}`).toBe(true);
    }
    expect(files.has("patches/ts-mls+1.6.4.patch")).toBe(true);
    expect([...files].some((f) => f.startsWith("dist/test/") || f.startsWith("src/"))).toBe(false);
  });

  it("examples/quickstart.ts type-checks against mimi-ds/client and runs against serve", async () => {
    const app = join(work, "app");
    await mkdir(join(app, "node_modules"), { recursive: true });
    await symlink(join(work, "pkg"), join(app, "node_modules", "mimi-ds"), "dir");
    await symlink(join(root, "node_modules", "@types"), join(app, "node_modules", "@types"), "dir");
    await cp(join(root, "examples", "quickstart.ts"), join(app, "quickstart.ts"));
    await writeFile(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    await writeFile(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          types: ["node"],
          outDir: "out",
        },
        files: ["quickstart.ts"],
      }),
    );
    await timed("typecheck example", () => run(tsc, ["-p", app], { timeout: 300_000 }));
    const { stdout } = await timed("run example", () =>
      run(process.execPath, [join(app, "out", "quickstart.js"), "--url", serve.url, "--ca", ca.caPath], { cwd: app, timeout: 120_000 }),
    );
    const lines = stdout.trim().split("\n");
    const result = JSON.parse(lines.at(-1)!) as { domain: string; epoch: number; heard: Record<string, string[]>; refusal: string };
    expect(result).toEqual({
      domain,
      epoch: 1,
      heard: { alice: ["hello alice"], bob: ["hello bob"] },
      refusal: "unknown_group",
    });
    expect(lines.some((l) => l.includes("bob <- joined"))).toBe(true);
  });
});
