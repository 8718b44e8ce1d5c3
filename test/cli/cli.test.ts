// The command line as a child process: dev-certs and serve (port from the log,
// Ping, graceful exit on SIGTERM and SIGINT).
import { execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { client } from "../helpers/clients.js";
import { makeDevCa } from "../helpers/devca.js";
import { cliMain, spawnServe, tsxBin, type ServeProcess } from "../helpers/process.js";

const run = (args: string[]) => promisify(execFile)(tsxBin, [cliMain, ...args], { cwd: process.cwd(), timeout: 60_000 });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-cli-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("dev-certs", () => {
  it("makes a CA and per-domain certificates once, that node:tls verifies both ways", async () => {
    const out = join(dir, "certs");
    const first = await run(["dev-certs", "--out", out, "--domain", "a.example", "--domain", "b.example"]);
    expect(first.stdout).toContain("created");
    const caPem = await readFile(join(out, "ca.pem"));
    const a = { cert: await readFile(join(out, "a.example", "cert.pem")), key: await readFile(join(out, "a.example", "key.pem")) };
    const b = { cert: await readFile(join(out, "b.example", "cert.pem")), key: await readFile(join(out, "b.example", "key.pem")) };
    for (const f of ["ca-key.pem", "a.example/key.pem", "b.example/key.pem"]) {
      expect((await stat(join(out, f))).mode & 0o777, f).toBe(0o600);
    }

    // Idempotent: a second run keeps every file.
    const second = await run(["dev-certs", "--out", out, "--domain", "a.example"]);
    expect(second.stdout).not.toContain("created");
    expect(await readFile(join(out, "a.example", "cert.pem"))).toEqual(a.cert);
    expect(await readFile(join(out, "ca.pem"))).toEqual(caPem);

    // Mutual TLS: a.example serves, b.example is the client; each verifies the other.
    const server = tls.createServer({ cert: a.cert, key: a.key, ca: caPem, requestCert: true, rejectUnauthorized: true }, (s) => {
      s.end(s.authorized ? "ok" : "no");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      for (const servername of ["a.example", "localhost"]) {
        const reply = await new Promise<string>((resolve, reject) => {
          const sock = tls.connect({ port, host: "127.0.0.1", servername, ca: caPem, cert: b.cert, key: b.key }, () => {
            expect(sock.authorized).toBe(true);
            const peer = sock.getPeerCertificate();
            expect(peer.subjectaltname).toBe("DNS:a.example, DNS:localhost, IP Address:127.0.0.1");
          });
          let data = "";
          sock.on("data", (d) => (data += d));
          sock.on("end", () => resolve(data));
          sock.on("error", reject);
        });
        expect(reply).toBe("ok");
      }
    } finally {
      server.close();
    }
  });

  it("refuses a domain that is not a DNS name", async () => {
    await expect(run(["dev-certs", "--out", join(dir, "bad"), "--domain", "../x"])).rejects.toMatchObject({ code: 2 });
  });
});

const serve = (certs: string, name: string): Promise<ServeProcess> =>
  spawnServe({ domain: "a.example", dataDir: join(dir, `data-${name}`), certsDir: certs, env: { MIMI_DS_DOMAIN: "a.example" } });

describe("serve", () => {
  const certs = () => join(dir, "certs");

  it.each(["SIGTERM", "SIGINT"] as const)("answers Ping, then exits 0 on %s", async (signal) => {
    const s = await serve(certs(), signal);
    const ca = await readFile(join(certs(), "ca.pem"));
    const hub = client(HubService, "grpc", `https://localhost:${s.port}`, { ca });
    expect((await hub.ping({})).domain).toBe("a.example");
    const started = Date.now();
    s.child.kill(signal);
    const { code } = await s.exit;
    expect(code).toBe(0);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(s.lines.map((l) => l.msg)).toEqual(expect.arrayContaining(["listening", "rpc", "shutting down", "closed"]));
    expect(s.lines.find((l) => l.msg === "rpc")).toMatchObject({ method: "Ping", code: "ok", domain: "a.example" });
    // The default store is created in the data directory.
    await stat(join(dir, `data-${signal}`, "ds.sqlite"));
  });

  it("bin/mimi-ds.js serves when started from another directory (its SQLite writer thread finds tsx)", async () => {
    const elsewhere = join(dir, "elsewhere");
    await mkdir(elsewhere);
    const own = await makeDevCa(["a.example"]);
    const tlsFlags = ["--tls-cert", own.domain("a.example").certPath, "--tls-key", own.domain("a.example").keyPath];
    const bin = join(process.cwd(), "bin", "mimi-ds.js");
    const child = spawn(process.execPath, [bin, "serve", "--domain", "a.example", "--listen", "127.0.0.1:0", "--data-dir", "data", ...tlsFlags], { cwd: elsewhere });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const deadline = Date.now() + 60_000;
    while (!out.includes('"listening"') && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(out, err).toContain('"listening"');
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    await stat(join(elsewhere, "data", "ds.sqlite"));
    await own.cleanup();
  });

  it("exits 2 with a message when required settings are missing", async () => {
    const err = await run(["serve", "--listen", "127.0.0.1:0"]).catch((e: { code: number; stderr: string }) => e);
    expect(err).toMatchObject({ code: 2 });
    expect((err as { stderr: string }).stderr).toContain("--domain");
  });
});
