#!/usr/bin/env node
// The `mimi-ds` command. A clone runs its TypeScript sources through tsx (a
// runtime dependency, so a production install, `npm ci --omit=dev`, needs no
// build step); a package shipped without sources runs the compiled dist/.
import { existsSync } from "node:fs";

const source = new URL("../src/cli/main.ts", import.meta.url);
if (existsSync(source)) {
  const { register } = await import("tsx/esm/api");
  register();
  await import(source.href);
} else {
  await import(new URL("../dist/src/cli/main.js", import.meta.url).href);
}
