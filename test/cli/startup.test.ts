// Start-up errors of `serve`, as an operator meets them: each is one line
// that names the flag to fix, exit status 2, no stack trace, and nothing left
// behind (no directories created, no database made). The composition root
// (createService) is run in this process for most cases: what main() prints
// for its ConfigError, and the exit status, are checked on real `serve`
// processes for a few of them.
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createService } from "../../src/cli/compose.js";
import { ConfigError, parseServeArgs } from "../../src/cli/config.js";
import { mongoUriWithTimeout } from "../../src/cli/preflight.js";
import { oneLine, runCli } from "../helpers/cli.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { memoryLogger } from "../helpers/server.js";

let dir: string;
let ca: DevCa;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-startup-"));
  ca = await makeDevCa(["a.example", "b.example"]);
});
afterAll(async () => {
  await ca?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
/** serve's flags for a fresh data dir, with `over` replacing (undefined: dropping) flags. */
function serveArgs(over: Record<string, string | undefined> = {}): string[] {
  const a = ca.domain("a.example");
  const flags: Record<string, string | undefined> = {
    "--domain": "a.example",
    "--listen": "127.0.0.1:0",
    "--data-dir": join(dir, `data-${++n}`),
    "--tls-cert": a.certPath,
    "--tls-key": a.keyPath,
    "--tls-ca": ca.caPath,
    ...over,
  };
  return Object.entries(flags).flatMap(([k, v]) => (v === undefined ? [] : [k, v]));
}

/** The ConfigError line createService refuses with (a started service would be a failure). */
async function refusal(args: string[]): Promise<string> {
  let service;
  try {
    service = await createService(parseServeArgs(args, {}), memoryLogger().logger, "test");
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    expect(err.message).not.toContain("\n");
    return err.message;
  }
  await service.close();
  throw new Error(`serve started with ${args.join(" ")}`);
}

async function refused(args: string[], flag: string, ...words: (string | RegExp)[]): Promise<string> {
  const line = await refusal(args);
  expect(line).toContain(flag);
  for (const w of words) expect(line).toMatch(w);
  return line;
}

async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port };
}

describe("serve refuses to start, with one line naming the flag", () => {
  it("a TLS file that does not exist, for each TLS flag", async () => {
    for (const flag of ["--tls-cert", "--tls-key", "--tls-ca"]) {
      await refused(serveArgs({ [flag]: join(dir, "nope.pem") }), flag, "nope.pem", "no such file");
    }
  });

  it("a certificate file without a certificate, a key that is not one, a key of another certificate", async () => {
    const junk = join(dir, "junk.pem");
    await writeFile(junk, "not PEM at all\n");
    await refused(serveArgs({ "--tls-cert": junk }), "--tls-cert", "no PEM certificate");
    await refused(serveArgs({ "--tls-key": junk }), "--tls-key", "not a private key");
    await refused(serveArgs({ "--tls-ca": junk }), "--tls-ca", "no PEM certificate");
    await refused(serveArgs({ "--tls-key": ca.domain("b.example").keyPath }), "--tls-key", "is not the key of --tls-cert");
  });

  it("a port in use (--listen and --metrics-listen), the store closed again", async () => {
    const { server, port } = await listening();
    try {
      const data = join(dir, "port-in-use");
      await refused(serveArgs({ "--listen": `127.0.0.1:${port}`, "--data-dir": data }), `--listen 127.0.0.1:${port}`, "already in use");
      await refused(serveArgs({ "--metrics-listen": `127.0.0.1:${port}`, "--data-dir": data }), `--metrics-listen 127.0.0.1:${port}`, "already in use");
      // The failed starts closed their store: a third one opens the same files.
      const s = await createService(parseServeArgs(serveArgs({ "--data-dir": data }), {}), memoryLogger().logger, "test");
      await s.close();
    } finally {
      server.close();
    }
  });

  it("a data dir that cannot be created: under a file, and in a directory this user may not write", async () => {
    const file = join(dir, "a-file");
    await writeFile(file, "x");
    await refused(serveArgs({ "--data-dir": join(file, "data") }), "--data-dir", `${file} is not a directory`);
    await refused(serveArgs({ "--data-dir": file }), "--data-dir", "is not a directory");

    // A real process, because permissions are per user: as root they do not stop
    // us, so the server then runs as nobody (uid 65534).
    const locked = join(dir, "locked");
    await mkdir(locked);
    const root = process.getuid?.() === 0;
    await chmod(dir, 0o755);
    await chmod(locked, root ? 0o755 : 0o500);
    try {
      const r = await runCli(["serve", ...serveArgs({ "--data-dir": join(locked, "data") })], root ? { uid: 65534, gid: 65534, env: { HOME: tmpdir() } } : {});
      expect(r.code, r.stderr).toBe(2);
      expect(oneLine(r)).toMatch(new RegExp(`^mimi-ds: --data-dir ${locked}/data: cannot create it: ${locked} is not writable: permission denied`));
      expect(existsSync(join(locked, "data"))).toBe(false);
    } finally {
      await chmod(locked, 0o755);
      await chmod(dir, 0o700);
    }
  });

  it("a --store in a directory that does not exist: refused, and nothing is created", async () => {
    const store = join(dir, "nonexistent", "dir", "ds.sqlite");
    await refused(serveArgs({ "--store": store }), "--store", "does not exist", "mimi-ds creates only --data-dir");
    expect(existsSync(join(dir, "nonexistent"))).toBe(false);
    await refused(serveArgs({ "--store": "postgres://db/x" }), "--store", "unsupported store URI scheme");
  });

  it("bad key files: hub-keys.json and the FanoutAuthToken key", async () => {
    const data = join(dir, "badkeys");
    await mkdir(data);
    await writeFile(join(data, "hub-keys.json"), "{ not json");
    await refused(serveArgs({ "--data-dir": data }), "--data-dir", "hub-keys.json is not a valid hub key file", "not JSON");
    await writeFile(join(data, "hub-keys.json"), JSON.stringify({ version: 1, keys: {} }));
    await refused(serveArgs({ "--data-dir": data }), "--data-dir", "no Ed25519 key");
    await writeFile(join(data, "hub-keys.json"), JSON.stringify({ version: 1, keys: { Ed25519: { publicKey: "AAAA", privateKey: "AAAA" } } }));
    await refused(serveArgs({ "--data-dir": data }), "--data-dir", "has 3 bytes, want 32");

    const token = join(dir, "token.json");
    await writeFile(token, JSON.stringify({ version: 2 }));
    await refused(serveArgs({ "--fanout-token-key": token }), "--fanout-token-key", "token.json");
    await writeFile(token, "]");
    await refused(serveArgs({ "--fanout-token-key": token }), "--fanout-token-key", "not JSON");
  });

  it("a peers file that does not exist or is wrong", async () => {
    await refused(serveArgs({ "--peers": join(dir, "peers.json") }), "--peers", "peers.json", "ENOENT");
    const peers = join(dir, "bad-peers.json");
    await writeFile(peers, JSON.stringify([{ domain: "b.example", endpoint: "http://x" }]));
    await refused(serveArgs({ "--peers": peers }), "--peers", "[0]");
  });

  it("an unreachable MongoDB fails after a 5 s server selection, with the password hidden", async () => {
    expect(mongoUriWithTimeout("mongodb://h")).toBe("mongodb://h/?serverSelectionTimeoutMS=5000");
    expect(mongoUriWithTimeout("mongodb://h/db?replicaSet=rs0")).toBe("mongodb://h/db?replicaSet=rs0&serverSelectionTimeoutMS=5000");
    expect(mongoUriWithTimeout("mongodb+srv://h/db?serverSelectionTimeoutMS=900")).toBe("mongodb+srv://h/db?serverSelectionTimeoutMS=900");
    const { server, port } = await listening();
    await new Promise<void>((r) => server.close(() => r()));
    const line = await refused(serveArgs({ "--store": `mongodb://op:s3cret@127.0.0.1:${port}/mimi` }), "--store", "MongoDB does not answer within 5 s");
    expect(line).not.toContain("s3cret");
    expect(line).toContain("op:***@");
  });

  it("flag errors", async () => {
    expect(() => parseServeArgs(serveArgs({ "--listen": "nowhere" }), {})).toThrow(/--listen wants host:port/);
    expect(() => parseServeArgs(serveArgs({ "--metrics-listen": "1.2.3.4" }), {})).toThrow(/--metrics-listen wants host:port/);
    expect(() => parseServeArgs([...serveArgs(), "--bogus"], {})).toThrow(ConfigError);
  });

  it("creates a new data dir 0700", async () => {
    const data = join(dir, "fresh", "data");
    // (A refused TLS file comes after the data dir is made.)
    await refused(serveArgs({ "--data-dir": data, "--tls-cert": join(dir, "missing.pem") }), "--tls-cert");
    expect((await stat(data)).mode & 0o777).toBe(0o700);
  });

  it("as a process: one line on stderr, exit 2, for a missing file and for a busy port", async () => {
    const missing = await runCli(["serve", ...serveArgs({ "--tls-cert": join(dir, "nope.pem") })]);
    expect(missing.code).toBe(2);
    expect(oneLine(missing)).toMatch(/^mimi-ds: --tls-cert .*nope\.pem: cannot read it: no such file or directory$/);
    const { server, port } = await listening();
    try {
      const busy = await runCli(["serve", ...serveArgs({ "--listen": `127.0.0.1:${port}` })]);
      expect(busy.code).toBe(2);
      expect(oneLine(busy)).toBe(`mimi-ds: --listen 127.0.0.1:${port}: the address is already in use (another process listens there)`);
      expect(busy.stdout).not.toContain('"listening"');
    } finally {
      server.close();
    }
  });
});
