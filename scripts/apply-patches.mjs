#!/usr/bin/env node
// postinstall: applies every patches/<package>+<version>.patch (the unified
// diffs `npx patch-package <package>` writes) to node_modules, with no
// dependency at all, so that a production install (`npm ci --omit=dev`, where
// patch-package is absent) gets the same patched packages as development.
//
// Exact: every hunk must match its context line for line (no fuzz); a file
// whose hunks all match the patched side is already patched and left alone
// (installs are re-run); anything else stops the install with the file named.
// The package's installed version must be the one in the patch's name.
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export class PatchError extends Error {
  name = "PatchError";
}

/** "ts-mls+1.6.4.patch" -> {name: "ts-mls", version: "1.6.4"}; "@s+p+1.0.0.patch" -> "@s/p". */
export function packageOfPatchFile(file) {
  const m = /^(.+)\+([^+]+)\.patch$/.exec(file);
  if (m === null) throw new PatchError(`${file}: not named <package>+<version>.patch`);
  return { name: m[1].replace("+", "/"), version: m[2] };
}

/** Lines with their terminators, so that a missing final newline is kept exactly. */
function splitLines(text) {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/**
 * The files of a git-style unified diff: path (relative to the project root),
 * whether it creates or deletes the file, and its hunks as old and new lines.
 */
export function parsePatch(text) {
  const files = [];
  const lines = text.split("\n");
  let file;
  let hunk;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("diff --git ")) {
      const m = /^diff --git a\/(.+) b\/(.+)$/.exec(line);
      if (m === null) throw new PatchError(`line ${i + 1}: cannot read ${JSON.stringify(line)}`);
      file = { path: m[2], create: false, remove: false, hunks: [] };
      files.push(file);
      hunk = undefined;
      continue;
    }
    if (file === undefined) continue;
    if (hunk === undefined || hunk.remaining === 0) {
      if (line.startsWith("new file mode")) file.create = true;
      else if (line.startsWith("deleted file mode")) file.remove = true;
      else if (line.startsWith("@@")) {
        const m = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(line);
        if (m === null) throw new PatchError(`line ${i + 1}: bad hunk header ${JSON.stringify(line)}`);
        const oldCount = m[2] === undefined ? 1 : Number(m[2]);
        const newCount = m[4] === undefined ? 1 : Number(m[4]);
        hunk = { oldStart: Number(m[1]), newStart: Number(m[3]), oldLines: [], newLines: [], remaining: oldCount + newCount, oldLeft: oldCount, newLeft: newCount };
        file.hunks.push(hunk);
      } else if (line.startsWith("\\") && hunk !== undefined) {
        dropNewline(hunk, lines[i - 1]);
      }
      continue;
    }
    const tag = line[0];
    const body = line.slice(1) + "\n";
    if (tag === " " && hunk.oldLeft > 0 && hunk.newLeft > 0) {
      hunk.oldLines.push(body);
      hunk.newLines.push(body);
      hunk.oldLeft--;
      hunk.newLeft--;
      hunk.remaining -= 2;
    } else if (tag === "-" && hunk.oldLeft > 0) {
      hunk.oldLines.push(body);
      hunk.oldLeft--;
      hunk.remaining--;
    } else if (tag === "+" && hunk.newLeft > 0) {
      hunk.newLines.push(body);
      hunk.newLeft--;
      hunk.remaining--;
    } else if (tag === "\\") {
      dropNewline(hunk, lines[i - 1]);
    } else {
      throw new PatchError(`${file.path}: line ${i + 1} of the patch does not fit its hunk`);
    }
  }
  for (const f of files) {
    for (const h of f.hunks) if (h.remaining !== 0) throw new PatchError(`${f.path}: a hunk is cut short`);
    for (const h of f.hunks) {
      delete h.remaining;
      delete h.oldLeft;
      delete h.newLeft;
    }
  }
  return files;
}

// "\ No newline at end of file" ends the line before it without "\n".
function dropNewline(hunk, previous) {
  const strip = (arr) => {
    const last = arr.length - 1;
    if (last >= 0 && arr[last].endsWith("\n")) arr[last] = arr[last].slice(0, -1);
  };
  if (previous.startsWith("-")) strip(hunk.oldLines);
  else if (previous.startsWith("+")) strip(hunk.newLines);
  else {
    strip(hunk.oldLines);
    strip(hunk.newLines);
  }
}

function matchesAt(lines, block, at) {
  if (at < 0 || at + block.length > lines.length) return false;
  for (let j = 0; j < block.length; j++) if (lines[at + j] !== block[j]) return false;
  return true;
}

/**
 * Applies hunks from `from` to `to` (old->new, or new->old to undo); undefined
 * when a hunk does not match. `exact`: only where the hunk header says.
 */
function applyHunks(text, hunks, from, to, exact = false) {
  const lines = splitLines(text);
  const out = [];
  let pos = 0;
  for (const h of hunks) {
    const want = h[from];
    // Where the hunk says (line numbers of the side we start from; an empty side
    // names the line after which it goes), else the first match after the previous hunk.
    const start = from === "oldLines" ? h.oldStart : h.newStart;
    let at = want.length === 0 ? start : start - 1;
    if (at < pos || !matchesAt(lines, want, at)) {
      if (exact) return undefined;
      at = -1;
      for (let k = pos; k + want.length <= lines.length; k++) {
        if (matchesAt(lines, want, k)) {
          at = k;
          break;
        }
      }
      if (at < 0) return undefined;
    }
    out.push(...lines.slice(pos, at), ...h[to]);
    pos = at + want.length;
  }
  out.push(...lines.slice(pos));
  return out.join("");
}

/**
 * The patched content of one file: `{content}` (undefined: delete it) and
 * whether it was `already` patched. Throws PatchError when neither side matches.
 */
export function patchFile(current, file) {
  if (file.create) {
    const content = file.hunks.flatMap((h) => h.newLines).join("");
    if (current === undefined) return { content, already: false };
    if (current === content) return { content, already: true };
    throw new PatchError(`${file.path}: the patch creates it, but a different file is there`);
  }
  if (current === undefined) {
    if (file.remove) return { content: undefined, already: true };
    throw new PatchError(`${file.path}: missing (the patch changes it)`);
  }
  if (file.remove) {
    const old = file.hunks.flatMap((h) => h.oldLines).join("");
    if (current === old) return { content: undefined, already: false };
    throw new PatchError(`${file.path}: the patch deletes it, but its content differs`);
  }
  // Patched already? Checked first and only where the hunks say: a hunk that only adds
  // lines at the end of a file still finds its context in the patched file.
  if (applyHunks(current, file.hunks, "newLines", "oldLines", true) !== undefined) return { content: current, already: true };
  const applied = applyHunks(current, file.hunks, "oldLines", "newLines");
  if (applied !== undefined) return { content: applied, already: false };
  throw new PatchError(`${file.path}: the patch does not apply (the file differs from what it was made against)`);
}

/** The unpatched content (the patch undone), for tests and for re-making a patch. */
export function unpatchFile(current, file) {
  if (file.create) return undefined;
  if (file.remove) return file.hunks.flatMap((h) => h.oldLines).join("");
  const undone = applyHunks(current, file.hunks, "newLines", "oldLines");
  if (undone === undefined) throw new PatchError(`${file.path}: not patched`);
  return undone;
}

/**
 * Applies every patch in `<root>/patches` to `<root>`; returns one line per
 * patch. All files of a patch are checked before any is written.
 */
export function applyPatches(root) {
  const dir = join(root, "patches");
  if (!existsSync(dir)) return [];
  const report = [];
  for (const name of readdirSync(dir).filter((f) => f.endsWith(".patch")).sort()) {
    const pkg = packageOfPatchFile(name);
    const pkgJson = join(root, "node_modules", pkg.name, "package.json");
    if (!existsSync(pkgJson)) {
      report.push(`${name}: ${pkg.name} is not installed, skipped`);
      continue;
    }
    const installed = JSON.parse(readFileSync(pkgJson, "utf8")).version;
    if (installed !== pkg.version) {
      throw new PatchError(`${name}: made for ${pkg.name} ${pkg.version}, but ${installed} is installed (update the patch: npx patch-package ${pkg.name})`);
    }
    const files = parsePatch(readFileSync(join(dir, name), "utf8"));
    const results = files.map((f) => {
      const path = resolve(root, f.path);
      if (!path.startsWith(resolve(root, "node_modules", pkg.name) + "/")) throw new PatchError(`${name}: ${f.path} is outside ${pkg.name}`);
      const current = existsSync(path) ? readFileSync(path, "utf8") : undefined;
      try {
        return { path, ...patchFile(current, f) };
      } catch (err) {
        if (err instanceof PatchError) throw new PatchError(`${name}: ${err.message}`);
        throw err;
      }
    });
    let changed = 0;
    for (const r of results) {
      if (r.already) continue;
      changed++;
      if (r.content === undefined) rmSync(r.path);
      else {
        mkdirSync(dirname(r.path), { recursive: true });
        writeFileSync(r.path, r.content);
      }
    }
    report.push(`${name}: ${changed === 0 ? "already applied" : `applied to ${changed} of ${results.length} files`}`);
  }
  return report;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
  try {
    for (const line of applyPatches(root)) console.log(`patches: ${line}`);
  } catch (err) {
    console.error(`patches: ${err instanceof PatchError ? err.message : err}`);
    process.exit(1);
  }
}
