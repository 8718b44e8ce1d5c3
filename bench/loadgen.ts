// The load generators of the RPC bench. h2load (nghttp2) when installed; else
// a Node one over node:http2 that runs in its own process, so it does not
// share the server's event loop (the server is a separate process anyway).
//
// Both send the same pre-framed gRPC request body over several HTTP/2
// connections with many concurrent streams, either closed-loop (as fast as the
// server answers, for throughput) or open-loop at a fixed rate (for latency).
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { log, nodeArgsToRun, quantile } from "./lib.js";

/** A command line as a shell would take it back (for the bench's log: every load it ran, runnable by hand). */
export function shellLine(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(" ");
}

export interface LoadSpec {
  /** https://127.0.0.1:PORT/pkg.Service/Method */
  readonly url: string;
  /** File with the framed gRPC request body. */
  readonly dataFile: string;
  readonly connections: number;
  /** Concurrent streams per connection. */
  readonly streams: number;
  readonly durationS: number;
  readonly warmupS: number;
  /** Open loop: total requests per second over all connections; undefined: closed loop. */
  readonly rps?: number;
}

export interface LoadResult {
  readonly tool: "h2load" | "node";
  readonly done: number;
  /** Requests sent (h2load may stop some in flight at the end). */
  readonly started: number;
  /** Responses with HTTP 200 (h2load) or grpc-status 0 (node). */
  readonly ok: number;
  readonly rps: number;
  /** Milliseconds, from per-request logs. */
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export const H2LOAD_MISSING = "h2load not found: install it with `sudo apt-get install -y nghttp2-client` (Debian/Ubuntu) or `brew install nghttp2` (macOS); using the Node load generator instead";

export function hasH2load(): boolean {
  return spawnSync("h2load", ["--version"], { encoding: "utf8" }).status === 0;
}

export async function runLoad(spec: LoadSpec, tool: "h2load" | "node"): Promise<LoadResult> {
  return tool === "h2load" ? runH2load(spec) : runNodeLoad(spec);
}

// ---------------------------------------------------------------- h2load

async function runH2load(spec: LoadSpec): Promise<LoadResult> {
  const logFile = join(tmpdir(), `mimi-h2load-${process.pid}-${Date.now()}.log`);
  const args = [
    "-c", String(spec.connections),
    "-m", String(spec.streams),
    "-t", "1",
    "-D", `${Math.round(spec.durationS * 1000)}ms`,
    "--warm-up-time", `${Math.round(spec.warmupS * 1000)}ms`,
    "--data", spec.dataFile,
    "-H", "content-type: application/grpc",
    "-H", "te: trailers",
    "--log-file", logFile,
    ...(spec.rps !== undefined ? ["--rps", String(Math.max(1, Math.round(spec.rps / spec.connections)))] : []),
    spec.url,
  ];
  log(`  $ ${shellLine(["h2load", ...args])}`);
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn("h2load", args, { stdio: ["ignore", "pipe", "pipe"] });
    let s = "";
    p.stdout.on("data", (d) => (s += String(d)));
    p.stderr.on("data", (d) => (s += String(d)));
    p.once("error", reject);
    p.once("exit", (code) => (code === 0 ? resolve(s) : reject(new Error(`h2load exited ${code}: ${s}`))));
  });
  const m = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(out);
  const r = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const codes = /status codes: (\d+) 2xx/.exec(out);
  if (m === null || r === null || codes === null) throw new Error(`cannot read h2load's output:\n${out}`);
  // Per-request log: start (us since epoch) \t HTTP status \t duration (us).
  // (h2load logs the measured requests; HTTP 200 only says the RPC reached the handler,
  // the grpc-status is checked by the caller through the queues and a Node run.)
  const lat: number[] = [];
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    const [, , us] = line.split("\t");
    if (us !== undefined) lat.push(Number(us) / 1000);
  }
  rmSync(logFile, { force: true });
  return {
    tool: "h2load",
    started: Number(r[2]),
    done: Number(r[3]),
    ok: Number(r[4]),
    rps: Number(m[3]),
    p50: quantile(lat, 0.5),
    p99: quantile(lat, 0.99),
    max: quantile(lat, 1),
  };
}

// ---------------------------------------------------------------- Node load generator (child process)

async function runNodeLoad(spec: LoadSpec): Promise<LoadResult> {
  const argv = [...nodeArgsToRun(import.meta.url), "--child", JSON.stringify(spec)];
  log(`  $ ${shellLine([process.execPath, ...argv])}`);
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"] });
    let s = "";
    p.stdout.on("data", (d) => (s += String(d)));
    p.once("error", reject);
    p.once("exit", (code) => (code === 0 ? resolve(s) : reject(new Error(`node load generator exited ${code}`))));
  });
  return JSON.parse(out) as LoadResult;
}

async function childMain(spec: LoadSpec): Promise<LoadResult> {
  const url = new URL(spec.url);
  const body = readFileSync(spec.dataFile);
  const sessions = Array.from({ length: spec.connections }, () =>
    http2.connect(url.origin, { rejectUnauthorized: false, maxSessionMemory: 64 }),
  );
  for (const s of sessions) s.on("error", () => undefined);
  const call = (s: http2.ClientHttp2Session): Promise<boolean> =>
    new Promise((resolve) => {
      const req = s.request({ ":method": "POST", ":path": url.pathname, "content-type": "application/grpc", te: "trailers" });
      let ok = false;
      req.on("response", (h) => {
        if (h["grpc-status"] !== undefined) ok = h["grpc-status"] === "0"; // trailers-only answer
      });
      req.on("trailers", (t) => (ok = t["grpc-status"] === "0"));
      req.on("data", () => undefined);
      req.on("end", () => resolve(ok));
      req.on("error", () => resolve(false));
      req.end(body);
    });

  const lat: number[] = [];
  let done = 0;
  let started = 0;
  let ok = 0;
  const t0 = performance.now();
  const measureFrom = t0 + spec.warmupS * 1000;
  const end = measureFrom + spec.durationS * 1000;
  const one = async (s: http2.ClientHttp2Session): Promise<void> => {
    const t = performance.now();
    const counted = t >= measureFrom;
    if (counted) started++;
    const good = await call(s);
    const now = performance.now();
    if (counted && now <= end) {
      done++;
      if (good) ok++;
      lat.push(now - t);
    }
  };
  if (spec.rps === undefined) {
    await Promise.all(
      sessions.flatMap((s) =>
        Array.from({ length: spec.streams }, async () => {
          while (performance.now() < end) await one(s);
        }),
      ),
    );
  } else {
    // Open loop: request i goes out at t0 + i/rps whatever the answers do.
    const inflight: Promise<void>[] = [];
    const interval = 1000 / spec.rps;
    for (let i = 0; ; i++) {
      const at = t0 + i * interval;
      if (at >= end) break;
      const wait = at - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      inflight.push(one(sessions[i % sessions.length]!));
    }
    await Promise.all(inflight);
  }
  for (const s of sessions) s.close();
  return { tool: "node", done, started, ok, rps: done / spec.durationS, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), max: quantile(lat, 1) };
}

if (process.argv[2] === "--child") {
  const spec = JSON.parse(process.argv[3]!) as LoadSpec;
  childMain(spec).then(
    (r) => {
      process.stdout.write(JSON.stringify(r));
      process.exit(0);
    },
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
