// Shared pieces of the benchmarks: statistics, a real `serve` process from the
// build, development certificates made by the CLI, gRPC framing, and groups of
// MimiMembers built through a DS.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { connect as connectTcp, createServer } from "node:net";
import { fileURLToPath } from "node:url";
import type { ExternalSender, KeyPackage, Welcome } from "ts-mls";
import { DSClient, MimiMember, type DSTransport, createDSTransport } from "../src/client/index.js";
import { decodeWith, externalSenderCodec } from "../src/wire/index.js";

/** The repository root (this file runs as bench/lib.ts under tsx and as dist/bench/lib.js). */
export const repoRoot: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("package.json not found above the bench");
    dir = up;
  }
  return dir;
})();

export const cliMain = join(repoRoot, "dist", "src", "cli", "main.js");

/** Node arguments that run the module at `moduleUrl` in a child process: under tsx (bench/*.ts) the child needs tsx too; from dist it is plain node. */
export function nodeArgsToRun(moduleUrl: string): string[] {
  const path = fileURLToPath(moduleUrl);
  return path.endsWith(".ts") ? ["--import", "tsx", path] : [path];
}

// ---------------------------------------------------------------- statistics

export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const fmt = (x: number, digits = 2): string =>
  !Number.isFinite(x) ? "-" : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(digits);

export const log = (msg: string): void => {
  process.stderr.write(`[bench] ${msg}\n`);
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- certificates and server

/** `mimi-ds dev-certs` into `dir` (the CLI of the build): one CA, a certificate per domain. */
export function devCerts(dir: string, domain: string | readonly string[]): { ca: Buffer; caPath: string } {
  requireBuild();
  const domains = typeof domain === "string" ? [domain] : domain;
  const r = spawnSync(process.execPath, [cliMain, "dev-certs", "--out", dir, ...domains.flatMap((d) => ["--domain", d])], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`dev-certs failed: ${r.stderr}`);
  const caPath = join(dir, "ca.pem");
  return { ca: readFileSync(caPath), caPath };
}

export function requireBuild(): void {
  if (!existsSync(cliMain)) throw new Error(`${cliMain} is missing: run \`make build\` (or \`make bench\`) first`);
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
}

export interface ServeOptions {
  readonly domain: string;
  readonly dataDir: string;
  readonly certsDir: string;
  readonly logLevel?: string;
  /** Extra node flags for the server (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
  /** Loopback port to listen on; default a free one. */
  readonly port?: number;
  /** Extra `serve` options (e.g. --peers FILE). */
  readonly args?: readonly string[];
}

/**
 * The benches measure throughput, not the security limits (docs/security.md):
 * their members are unregistered clients with made-up tokens (benchMember),
 * and one creator fetches thousands of KeyPackages. serve logs each relaxed
 * setting as a warning.
 */
export const BENCH_POLICY_ARGS: readonly string[] = [
  "--local-clients", "unchecked",
  "--key-packages-per-requester", "100000000/h",
  "--key-packages-per-peer", "100000000/h",
  "--max-groups-per-creator", "100000000",
];

/** `node dist/src/cli/main.js serve` on a free loopback port; its stdout log is drained (and discarded). */
export async function startServe(o: ServeOptions): Promise<ServeProcess> {
  requireBuild();
  const port = o.port ?? (await freePort());
  const child = spawn(
    process.execPath,
    [
      ...(o.nodeArgs ?? []),
      cliMain,
      "serve",
      "--domain",
      o.domain,
      "--listen",
      `127.0.0.1:${port}`,
      "--data-dir",
      o.dataDir,
      "--tls-cert",
      join(o.certsDir, o.domain, "cert.pem"),
      "--tls-key",
      join(o.certsDir, o.domain, "key.pem"),
      "--tls-ca",
      join(o.certsDir, "ca.pem"),
      "--log-level",
      o.logLevel ?? "info",
      ...BENCH_POLICY_ARGS,
      // Benchmarks register many clients from one address: development registration, no per-address quota.
      "--open-registration",
      "--registration-rate-limit",
      "1000000/h",
      ...(o.args ?? []),
    ],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += String(d)));
  child.stdout!.resume(); // per-RPC log lines: drained, not kept
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  // The port is chosen here (the "listening" line is not logged at --log-level warn).
  for (let i = 0; ; i++) {
    if (gone) throw new Error(`serve exited early: ${stderr}`);
    if (await canConnect(port)) break;
    if (i > 400) throw new Error("serve did not start listening within 20 s");
    await sleep(50);
  }
  return {
    child,
    port,
    url: `https://localhost:${port}`,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === "object" && a !== null ? a.port : 0));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connectTcp(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

// ---------------------------------------------------------------- gRPC framing

/** One gRPC length-prefixed message: flag 0 (uncompressed), big-endian length, bytes. */
export function grpcFrame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

// ---------------------------------------------------------------- groups through a DS

export interface BenchGroup {
  readonly creator: MimiMember;
  readonly others: readonly MimiMember[];
  readonly groupId: Uint8Array;
  readonly hubSender: ExternalSender;
}

export async function hubSender(hub: DSClient): Promise<ExternalSender> {
  const info = await hub.hub.hubInfo({ cipherSuite: 1 });
  return decodeWith(externalSenderCodec, info.externalSender, "ExternalSender");
}

/** A member of `domain` with a random FanoutAuthToken (accepted only with --local-clients unchecked, BENCH_POLICY_ARGS). */
export async function benchMember(domain: string, name: string, hub: DSClient): Promise<MimiMember> {
  const m = await MimiMember.create({ clientId: `mimi://${domain}/u/${name}/d/1`, hub });
  m.token = { token: randomBytes(16) };
  return m;
}

/** A group of `n` members made by one creator: create_group, then one add_clients commit with n-1 KeyPackages. */
export async function buildGroup(
  hub: DSClient,
  domain: string,
  n: number,
  joinerKeyPackages?: readonly KeyPackage[],
): Promise<BenchGroup & { keyPackages: KeyPackage[]; welcome?: Welcome }> {
  const sender = await hubSender(hub);
  const creator = await benchMember(domain, "creator", hub);
  const others: MimiMember[] = [];
  let kps: KeyPackage[];
  if (joinerKeyPackages !== undefined) kps = [...joinerKeyPackages];
  else {
    kps = [];
    for (let i = 1; i < n; i++) {
      const m = await benchMember(domain, `m${i}`, hub);
      others.push(m);
      kps.push((await m.generateKeyPackage()).publicPackage);
    }
  }
  const groupId = await creator.createGroup(sender);
  const welcome = kps.length > 0 ? await creator.add(kps) : undefined;
  return { creator, others, groupId, hubSender: sender, keyPackages: kps, ...(welcome !== undefined ? { welcome } : {}) };
}

export function connect(url: string, ca: Buffer): { transport: DSTransport; hub: DSClient } {
  const transport = createDSTransport({ baseUrl: url, ca });
  return { transport, hub: new DSClient(transport) };
}
