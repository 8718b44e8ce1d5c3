// The replica-set start script of the MongoDB workflow (test/store/mongo-replset.sh),
// run here against a stand-in `docker` on PATH (no Docker daemon on these
// machines): its waits must fail on time-out with the container's logs, and
// accept only the exact answers ("1", "true"), not "10".
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const script = fileURLToPath(new URL("./mongo-replset.sh", import.meta.url));
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A `docker` that answers mongosh the way a scenario says; every call is logged. */
function fakeDocker(opts: { ping: string; primaryAfter: number; runFails?: boolean }): { dir: string; env: NodeJS.ProcessEnv } {
  const dir = mkdtempSync(join(tmpdir(), "mimi-docker-"));
  dirs.push(dir);
  writeFileSync(
    join(dir, "docker"),
    `#!/usr/bin/env bash
echo "$*" >> "${dir}/calls"
case "$1" in
  rm) exit 0 ;;
  run) ${opts.runFails ? 'echo "docker: no daemon" >&2; exit 125' : "echo 0123456789ab; exit 0"} ;;
  logs) echo "FAKE MONGOD LOG LINE"; exit 0 ;;
  exec)
    js="\${@: -1}"
    case "$js" in
      *isWritablePrimary*)
        n=$(( $(cat "${dir}/primary" 2>/dev/null || echo 0) + 1 )); echo "$n" > "${dir}/primary"
        if [ "$n" -ge ${opts.primaryAfter} ]; then echo true; else echo false; fi ;;
      *ping*) echo "${opts.ping}" ;;
      *rs.initiate*) echo 1 ;;
      *) exit 1 ;;
    esac ;;
esac
`,
  );
  chmodSync(join(dir, "docker"), 0o755);
  return { dir, env: { ...process.env, PATH: `${dir}:${process.env.PATH ?? ""}`, MONGO_WAIT_S: "3", MONGO_PORT: "27999" } };
}

const run = (env: NodeJS.ProcessEnv, ...args: string[]) => spawnSync("bash", [script, ...args], { env, encoding: "utf8", timeout: 60_000 });

describe("test/store/mongo-replset.sh", () => {
  it("starts, initiates and waits for a writable primary; prints the URI", () => {
    const { env } = fakeDocker({ ping: "1", primaryAfter: 2 });
    const r = run(env, "start");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("mongodb://127.0.0.1:27999/?replicaSet=rs0&directConnection=true");
  });

  it("fails on time-out waiting for the primary, with the container's logs", () => {
    const { env } = fakeDocker({ ping: "1", primaryAfter: 1000 });
    const r = run(env, "start");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("timed out after 3s waiting for a writable primary (last answer: 'false')");
    expect(r.stderr).toContain("FAKE MONGOD LOG LINE");
    expect(r.stdout).toBe("");
  });

  it("does not take '10' for '1' (the old `grep -q 1`)", () => {
    const { env } = fakeDocker({ ping: "10", primaryAfter: 1 });
    const r = run(env, "start");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("waiting for mongod to answer (last answer: '10')");
  });

  it("fails when the container cannot start; rejects unknown commands", () => {
    const { env } = fakeDocker({ ping: "1", primaryAfter: 1, runFails: true });
    const r = run(env, "start");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("docker run failed");
    expect(run(env, "bogus").status).toBe(2);
  });
});
