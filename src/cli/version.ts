// The version of this mimi-ds build: package.json's, read once from the
// package root (the nearest package.json named mimi-ds above this module, so
// that it is found from src/ under tsx and from dist/src/ alike).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

export function mimiDsVersion(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: unknown; version?: unknown };
      if (pkg.name === "mimi-ds" && typeof pkg.version === "string") return (cached = pkg.version);
    } catch {
      // not here: one directory up
    }
    const up = dirname(dir);
    if (up === dir) return (cached = "unknown");
    dir = up;
  }
}
