// Provider-authenticated registration end to end with the real command line:
// `registration-key` makes the issuer key, `registration-credential` issues a
// credential, a real `serve --registration-key` accepts exactly that client
// and key; `--open-registration` logs its warning.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { cliMain, spawnServe, tsxBin } from "../helpers/process.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { dsTransport, TestClient } from "../delivery/helpers.js";
import { issueRegistrationCredential, parseIssuerPrivateKey } from "../../src/delivery/registration.js";

const run = (args: string[]) => promisify(execFile)(tsxBin, [cliMain, ...args], { cwd: process.cwd(), timeout: 60_000 });

let dir: string;
let ca: DevCa;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-reg-"));
  ca = await makeDevCa(["a.example"]);
});
afterAll(async () => {
  await ca.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe("registration-key and registration-credential", () => {
  it("issue a credential that serve --registration-key accepts for that id and key only", async () => {
    const keys = join(dir, "issuer");
    expect((await run(["registration-key", "--out", keys])).stdout).toContain("created");
    expect((await stat(join(keys, "registration-issuer-key.pem"))).mode & 0o777).toBe(0o600);
    // Never overwritten.
    await expect(run(["registration-key", "--out", keys])).rejects.toMatchObject({ code: 2 });

    const server = await spawnServe({
      domain: "a.example",
      dataDir: join(dir, "data"),
      certsDir: ca.dir,
      registration: { keyFile: join(keys, "registration-issuer.pub.pem") },
    });
    const transport = dsTransport(server.url, ca.ca);
    try {
      const alice = await TestClient.create("alice:1@a.example", transport);
      const issue = async (id: string, key: Uint8Array) =>
        Buffer.from(
          (
            await run([
              "registration-credential",
              "--issuer-key",
              join(keys, "registration-issuer-key.pem"),
              "--client-id",
              id,
              "--signature-key",
              Buffer.from(key).toString("base64"),
              "--valid-for",
              "10m",
            ])
          ).stdout.trim(),
          "base64",
        );
      const refused = await alice.register().catch((e: unknown) => ConnectError.from(e).code);
      expect(refused).toBe(Code.Unauthenticated);
      // The same issuer key, used in-process, for another id: refused.
      const issuerKey = parseIssuerPrivateKey(await readFile(join(keys, "registration-issuer-key.pem"), "utf8"));
      const forBob = issueRegistrationCredential(issuerKey, {
        clientId: new TextEncoder().encode("bob:1@a.example"),
        signaturePublicKey: alice.sig.publicKey,
        notBeforeMs: 0n,
        notAfterMs: BigInt(Date.now() + 60_000),
      });
      expect(await alice.register(forBob).catch((e: unknown) => ConnectError.from(e).code)).toBe(Code.PermissionDenied);
      const token = await alice.register(await issue(alice.clientId, alice.sig.publicKey));
      expect(token.length).toBeGreaterThan(0);
      expect(server.lines.some((l) => l.msg === "client registered" && l.clientId === alice.clientId)).toBe(true);
      expect(server.lines.some((l) => typeof l.msg === "string" && l.msg.includes("DEVELOPMENT MODE"))).toBe(false);
    } finally {
      transport.close();
      await server.stop();
    }
    // Child processes (the CLI three times, serve once) on a loaded machine.
  }, 300_000);

  it("--open-registration says so in the log", async () => {
    const server = await spawnServe({ domain: "a.example", dataDir: join(dir, "data-open"), certsDir: ca.dir, registration: "open" });
    try {
      const warning = server.lines.find((l) => typeof l.msg === "string" && l.msg.includes("DEVELOPMENT MODE"));
      expect(warning?.level).toBe(40);
    } finally {
      await server.stop();
    }
  });
});
