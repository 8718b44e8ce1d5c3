// The postinstall patch applier (scripts/apply-patches.mjs) that lets a
// production install (`npm ci --omit=dev`, no patch-package) get the patched
// ts-mls: on the project's real patch, from the pristine files it was made
// against, and on the cases a hand-written diff exercises.
import { mkdtemp, mkdir, readFile, rm, writeFile, cp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyPatches, packageOfPatchFile, parsePatch, patchFile, unpatchFile } from "../../scripts/apply-patches.mjs";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-patches-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const patchName = "ts-mls+1.6.4.patch";

/** A project root holding a copy of the installed ts-mls with the patch undone, and the patch. */
async function pristineRoot(name: string): Promise<{ root: string; files: ReturnType<typeof parsePatch> }> {
  const root = join(dir, name);
  await mkdir(join(root, "patches"), { recursive: true });
  await cp(join("patches", patchName), join(root, "patches", patchName));
  await cp(join("node_modules", "ts-mls", "package.json"), join(root, "node_modules", "ts-mls", "package.json"), { recursive: true });
  const files = parsePatch(await readFile(join("patches", patchName), "utf8"));
  for (const f of files) {
    const patched = await readFile(f.path, "utf8");
    // Undo at the lines the hunks name: what `npm ci` unpacks before postinstall.
    const original = unpatchFile(patched, f)!;
    expect(original, f.path).not.toBe(patched);
    await mkdir(dirname(join(root, f.path)), { recursive: true });
    await writeFile(join(root, f.path), original);
  }
  return { root, files };
}

describe("apply-patches", () => {
  it("turns the pristine ts-mls files into exactly the installed patched ones, once", async () => {
    const { root, files } = await pristineRoot("real");
    expect(applyPatches(root)).toEqual([`${patchName}: applied to ${files.length} of ${files.length} files`]);
    for (const f of files) expect(await readFile(join(root, f.path), "utf8"), f.path).toBe(await readFile(f.path, "utf8"));
    // A second install run (npm install of another package re-runs postinstall) changes nothing.
    expect(applyPatches(root)).toEqual([`${patchName}: already applied`]);
    for (const f of files) expect(await readFile(join(root, f.path), "utf8"), f.path).toBe(await readFile(f.path, "utf8"));
  });

  it("refuses a file that is neither the original nor the patched one, and writes nothing", async () => {
    const { root, files } = await pristineRoot("changed");
    const victim = files[files.length - 1]!;
    const first = files[0]!;
    const before = await readFile(join(root, first.path), "utf8");
    await writeFile(join(root, victim.path), "something else entirely\n");
    expect(() => applyPatches(root)).toThrow(`${patchName}: ${victim.path}: the patch does not apply`);
    // All files are checked before any is written.
    expect(await readFile(join(root, first.path), "utf8")).toBe(before);
  });

  it("refuses another version of the package than the patch was made for", async () => {
    const { root } = await pristineRoot("version");
    const pj = join(root, "node_modules", "ts-mls", "package.json");
    await writeFile(pj, JSON.stringify({ ...JSON.parse(await readFile(pj, "utf8")), version: "1.6.5" }));
    expect(() => applyPatches(root)).toThrow(/made for ts-mls 1\.6\.4, but 1\.6\.5 is installed/);
  });

  it("skips a patch whose package is not installed (a dev dependency under --omit=dev)", async () => {
    const root = join(dir, "absent");
    await mkdir(join(root, "patches"), { recursive: true });
    await writeFile(join(root, "patches", "left-pad+1.0.0.patch"), "");
    expect(applyPatches(root)).toEqual(["left-pad+1.0.0.patch: left-pad is not installed, skipped"]);
  });

  it("handles created and deleted files, missing final newlines, scoped names and shifted hunks", async () => {
    expect(packageOfPatchFile("@scope+pkg+2.0.0.patch")).toEqual({ name: "@scope/pkg", version: "2.0.0" });
    const patch = [
      "diff --git a/node_modules/p/a.js b/node_modules/p/a.js",
      "index 1..2 100644",
      "--- a/node_modules/p/a.js",
      "+++ b/node_modules/p/a.js",
      "@@ -2,3 +2,3 @@",
      " two",
      "-three",
      "+THREE",
      " four",
      "@@ -6,2 +6,2 @@",
      " six",
      "-seven",
      "\\ No newline at end of file",
      "+SEVEN",
      "\\ No newline at end of file",
      "diff --git a/node_modules/p/new.js b/node_modules/p/new.js",
      "new file mode 100644",
      "index 0000000..1",
      "--- /dev/null",
      "+++ b/node_modules/p/new.js",
      "@@ -0,0 +1,2 @@",
      "+made",
      "+here",
      "diff --git a/node_modules/p/old.js b/node_modules/p/old.js",
      "deleted file mode 100644",
      "index 1..0000000",
      "--- a/node_modules/p/old.js",
      "+++ /dev/null",
      "@@ -1 +0,0 @@",
      "-gone",
      "",
    ].join("\n");
    const root = join(dir, "synthetic");
    await mkdir(join(root, "patches"), { recursive: true });
    await mkdir(join(root, "node_modules", "p"), { recursive: true });
    await writeFile(join(root, "patches", "p+1.0.0.patch"), patch);
    await writeFile(join(root, "node_modules", "p", "package.json"), JSON.stringify({ name: "p", version: "1.0.0" }));
    await writeFile(join(root, "node_modules", "p", "a.js"), "one\ntwo\nthree\nfour\nfive\nsix\nseven");
    await writeFile(join(root, "node_modules", "p", "old.js"), "gone\n");
    expect(applyPatches(root)).toEqual(["p+1.0.0.patch: applied to 3 of 3 files"]);
    expect(await readFile(join(root, "node_modules", "p", "a.js"), "utf8")).toBe("one\ntwo\nTHREE\nfour\nfive\nsix\nSEVEN");
    expect(await readFile(join(root, "node_modules", "p", "new.js"), "utf8")).toBe("made\nhere\n");
    await expect(readFile(join(root, "node_modules", "p", "old.js"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(applyPatches(root)).toEqual(["p+1.0.0.patch: already applied"]);

    // Lines added above a hunk (another version of the file would be refused by the
    // version check; within one, a hunk is found where its context is).
    const [file] = parsePatch(patch);
    expect(patchFile("zero\none\ntwo\nthree\nfour\nfive\nsix\nseven", file!).content).toBe("zero\none\ntwo\nTHREE\nfour\nfive\nsix\nSEVEN");
    // A path outside the patched package is refused.
    await writeFile(join(root, "patches", "p+1.0.0.patch"), patch.replaceAll("node_modules/p/old.js", "node_modules/q/x.js"));
    expect(() => applyPatches(root)).toThrow(/outside p/);
  });
});

describe("install lifecycle scripts", () => {
  // A production install (`npm ci --omit=dev`) runs these without devDependencies:
  // each must be `node <file>` whose file imports only Node built-ins or other project files.
  it("run only node and Node built-ins, no package (patch-package is a devDependency)", async () => {
    const pkg = JSON.parse(await readFile("package.json", "utf8")) as { scripts?: Record<string, string> };
    const lifecycle = ["preinstall", "install", "postinstall", "prepare"].filter((s) => pkg.scripts?.[s] !== undefined);
    expect(lifecycle).toEqual(["postinstall"]);
    for (const s of lifecycle) {
      const m = /^node (\S+\.m?js)$/.exec(pkg.scripts![s]!);
      expect(m, `${s}: ${pkg.scripts![s]}`).not.toBeNull();
      const source = await readFile(m![1]!, "utf8");
      const specifiers = [...source.matchAll(/(?:^|\n)\s*import\b[^"']*["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']|\brequire\(\s*["']([^"']+)["']/g)].map((x) => x[1] ?? x[2] ?? x[3]!);
      expect(specifiers.length).toBeGreaterThan(0);
      for (const spec of specifiers) expect(spec.startsWith("node:") || spec.startsWith("."), `${m![1]} imports ${spec}`).toBe(true);
    }
  });
});
