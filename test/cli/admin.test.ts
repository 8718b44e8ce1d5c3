// The operator commands against a real `serve` process, as a stranger runs
// them: every failure is one line saying what the server (or the network)
// answered, exit 1, never a stack trace; and the AdminService RPCs for the
// DS's own clients (revoke-tokens, block, unblock, blocks) do what they say,
// for the operator only.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { createDSTransport, DSClient, MimiMember, type DSTransport } from "../../src/client/index.js";
import { mimiDsVersion } from "../../src/cli/version.js";
import { oneLine, runCli, type CliResult } from "../helpers/cli.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

const A = "a.example";
let dir: string;
let ca: DevCa;
let other: DevCa;
let serve: ServeProcess;
const transports: DSTransport[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-admin-"));
  ca = await makeDevCa([A, "b.example"]);
  other = await makeDevCa([A]);
  serve = await spawnServe({ domain: A, dataDir: join(dir, "data"), certsDir: ca.dir, args: ["--metrics-listen", "127.0.0.1:0"] });
});
afterAll(async () => {
  for (const t of transports) t.close();
  await serve?.stop();
  await ca?.cleanup();
  await other?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

const operator = () => ["--endpoint", serve.url, "--ca", ca.caPath, "--cert", ca.domain(A).certPath, "--key", ca.domain(A).keyPath];
const failed = (r: CliResult): string => {
  expect(r.code, r.stdout + r.stderr).toBe(1);
  expect(r.stdout).toBe("");
  return oneLine(r);
};

function transport(cert?: { cert: Buffer; key: Buffer }): DSTransport {
  const t = createDSTransport({ baseUrl: serve.url, ca: ca.ca, ...(cert ?? {}) });
  transports.push(t);
  return t;
}

async function client(name: string): Promise<MimiMember> {
  const t = transport();
  const m = await MimiMember.create({ clientId: `mimi://${A}/u/${name}/d/1`, hub: new DSClient(t), local: t });
  await m.register();
  return m;
}

describe("operator commands print what went wrong in one line", () => {
  it("hub-info answers with the version; --version prints it", async () => {
    const r = await runCli(["hub-info", "--endpoint", serve.url, "--ca", ca.caPath]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ domain: A, serverVersion: mimiDsVersion(), protocolVersions: [1] });
    const v = await runCli(["--version"]);
    expect(v.stdout.trim()).toBe(mimiDsVersion());
    expect(mimiDsVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("nothing listening, the wrong CA, a plain-HTTP port, a name that does not resolve", async () => {
    const closed = `https://127.0.0.1:1`;
    expect(failed(await runCli(["hub-info", "--endpoint", closed, "--ca", ca.caPath]))).toBe(`mimi-ds: nothing listens at ${closed} (connection refused)`);
    expect(failed(await runCli(["hub-info", "--endpoint", serve.url, "--ca", other.caPath]))).toMatch(/^mimi-ds: TLS: the certificate of https:\/\/localhost:\d+ is not issued by the CA given with --ca/);
    const metrics = String(serve.lines.find((l) => l.msg === "listening")!.metrics).replace("http://", "https://").replace("/metrics", "");
    expect(failed(await runCli(["hub-info", "--endpoint", metrics, "--ca", ca.caPath]))).toContain("does not speak TLS");
    expect(failed(await runCli(["hub-info", "--endpoint", "https://no-such-host.invalid:8443", "--ca", ca.caPath]))).toMatch(/no-such-host\.invalid does not resolve/);
  });

  it("the README's propose-removal for a group that does not exist: the DS's own error", async () => {
    const line = failed(await runCli(["propose-removal", ...operator(), "--group", "nope@a.example", "--client", `mimi://${A}/u/x/d/1`]));
    expect(line).toMatch(/^mimi-ds: https:\/\/localhost:\d+ refused: unknown_group \(DS error 7\): /);
  });

  it("without a client certificate, or with one the DS's CA did not issue", async () => {
    const none = await runCli(["revoke-tokens", "--endpoint", serve.url, "--ca", ca.caPath, "--client", "x"]);
    expect(none.code).toBe(2);
    expect(oneLine(none)).toContain("revoke-tokens needs --cert");
    const foreign = await runCli(["blocks", "--endpoint", serve.url, "--ca", ca.caPath, "--cert", other.domain(A).certPath, "--key", other.domain(A).keyPath, "--client", "x"]);
    // The TLS layer lets an unknown client certificate through; AdminService does not.
    expect(failed(foreign)).toMatch(/answered unauthenticated: AdminService needs a client certificate for this DS's domain/);
    const flag = await runCli(["propose-addition", ...operator(), "--group", "g@a.example", "--key-package", join(dir, "missing.kp")]);
    expect(flag.code).toBe(2);
    expect(oneLine(flag)).toContain("--key-package");
  });
});

describe("AdminService: the DS's own clients", () => {
  it("revoke-tokens: the client's earlier tokens stop working; a fresh Register works again", async () => {
    const alice = await client("alice");
    expect(await alice.publishKeyPackages(1)).toBe(1);
    const r = await runCli(["revoke-tokens", ...operator(), "--client", alice.clientId]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { tokensNotBefore: string; revokedTokensValidUntil: string };
    expect(Date.parse(out.tokensNotBefore)).toBeGreaterThan(0);
    // KeyPackages carrying the revoked token are refused now.
    await expect(alice.publishKeyPackages(1)).rejects.toMatchObject({ code: Code.PermissionDenied });
    await alice.register();
    expect(await alice.publishKeyPackages(1)).toBe(2);

    // With a grace period the old token still works until it ends.
    const g = await runCli(["revoke-tokens", ...operator(), "--client", alice.clientId, "--grace", "1h"]);
    expect(g.code, g.stderr).toBe(0);
    const graced = JSON.parse(g.stdout) as { tokensNotBefore: string; revokedTokensValidUntil: string };
    expect(Date.parse(graced.revokedTokensValidUntil) - Date.parse(graced.tokensNotBefore)).toBeGreaterThan(3_500_000);
    expect(await alice.publishKeyPackages(1)).toBe(3);
  });

  it("block / unblock / blocks change and read a client's blocks", async () => {
    const bob = await client("bob");
    const blocks = async (...a: string[]) => {
      const r = await runCli([...a, ...operator(), "--client", bob.clientId]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { blockedDomains: string[]; blockedGroups: string[] };
    };
    expect(await blocks("blocks")).toMatchObject({ blockedDomains: [], blockedGroups: [] });
    expect(await blocks("block", "--domain", "Spam.Example", "--domain", "b.example", "--group", "g1@c.example", "--group", "b64:AAEC")).toMatchObject({
      blockedDomains: ["b.example", "spam.example"],
      blockedGroups: ["g1@c.example", "b64:AAEC"],
    });
    expect(await blocks("unblock", "--domain", "b.example", "--group", "g1@c.example")).toMatchObject({ blockedDomains: ["spam.example"], blockedGroups: ["b64:AAEC"] });
    expect(await blocks("blocks")).toMatchObject({ blockedDomains: ["spam.example"], blockedGroups: ["b64:AAEC"] });
  });

  it("refuses strangers, other domains' clients, unknown clients and bad lists, changing nothing", async () => {
    const carol = await client("carol");
    const own = ca.domain(A);
    const admin = (cert?: { cert: Buffer; key: Buffer }) => createClient(AdminService, transport(cert));
    const code = async (p: Promise<unknown>): Promise<Code> => {
      try {
        await p;
      } catch (err) {
        return ConnectError.from(err).code;
      }
      throw new Error("accepted");
    };
    const block = { clientId: carol.clientId, blockDomains: ["x.example"] };
    // No certificate; a certificate for another domain from the same CA (not the operator's).
    expect(await code(admin().updateBlocks(block))).toBe(Code.Unauthenticated);
    expect(await code(admin().revokeFanoutTokens({ clientId: carol.clientId }))).toBe(Code.Unauthenticated);
    const b = ca.domain("b.example");
    expect(await code(admin({ cert: b.cert, key: b.key }).updateBlocks(block))).toBe(Code.Unauthenticated);
    const op = admin({ cert: own.cert, key: own.key });
    expect(await code(op.updateBlocks({ clientId: "mimi://b.example/u/x/d/1", blockDomains: ["x.example"] }))).toBe(Code.PermissionDenied);
    expect(await code(op.updateBlocks({ clientId: `mimi://${A}/u/nobody/d/1` }))).toBe(Code.NotFound);
    expect(await code(op.revokeFanoutTokens({ clientId: `mimi://${A}/u/nobody/d/1` }))).toBe(Code.NotFound);
    expect(await code(op.updateBlocks({ clientId: carol.clientId, blockDomains: ["../etc"] }))).toBe(Code.InvalidArgument);
    expect(await code(op.updateBlocks({ clientId: carol.clientId, blockGroups: [new Uint8Array(0)] }))).toBe(Code.InvalidArgument);
    expect(await code(op.updateBlocks({ clientId: carol.clientId, blockDomains: Array.from({ length: 101 }, (_, i) => `d${i}.example`) }))).toBe(Code.InvalidArgument);
    expect(await code(op.revokeFanoutTokens({ clientId: carol.clientId, gracePeriodMs: 2n ** 62n }))).toBe(Code.InvalidArgument);
    // At most 1000 blocked domains: the call that would pass it changes nothing.
    for (let i = 0; i < 10; i++) await op.updateBlocks({ clientId: carol.clientId, blockDomains: Array.from({ length: 100 }, (_, j) => `d${i * 100 + j}.example`) });
    expect(await code(op.updateBlocks({ clientId: carol.clientId, blockDomains: ["one-more.example"], unblockDomains: [] }))).toBe(Code.ResourceExhausted);
    const now = await op.updateBlocks({ clientId: carol.clientId });
    expect(now.blockedDomains).toHaveLength(1000);
    expect(now.blockedDomains).not.toContain("one-more.example");
    // Nothing of the refused calls reached the record: carol's token still works.
    expect(await carol.publishKeyPackages(1)).toBe(1);
  });
});
