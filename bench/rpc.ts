// SendMessage over gRPC/TLS against a real `serve` process, with the same
// server's no-op RPC (HubService/Ping) as the baseline of the same run.
//
//   node dist/bench/rpc.js [--quick] [--reps=N] [--duration=S] [--log-levels=info,warn] [--loadgen=node]
//
// A 10-member group is built with MimiMembers over gRPC; one send_message
// DSRequest (a 1 KB PrivateMessage, client_signature by the creator) is
// encoded once and sent again and again (the DS does not track generations).
// Throughput: closed loop, several connections x streams. Latency: open loop
// at half the measured SendMessage throughput, p50/p99 from per-request logs;
// at the same rate, the server's Ping and a bare node:http2 answer (h2floor.ts:
// no connect-node, no DS) show what the transport and the machine contribute.
// Checks: a sample of each request through a gRPC client (status OK) and, after
// every run, the recipients' queues grew by 9 per answered request.
import { create, toBinary } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { PingRequestSchema, SubmitRequestSchema } from "../gen/mimi/ds/v1/hub_pb.js";
import { buildDSRequest } from "../src/client/index.js";
import { encodeDSRequest, encodeMLSMessage } from "../src/wire/index.js";
import { buildGroup, connect, devCerts, fmt, grpcFrame, log, median, startServe } from "./lib.js";
import { startFloorServer, type FloorServer } from "./h2floor.js";
import { H2LOAD_MISSING, hasH2load, runLoad, type LoadResult } from "./loadgen.js";

export interface RpcOptions {
  readonly quick?: boolean;
  readonly reps?: number;
  readonly durationS?: number;
  readonly logLevels?: readonly string[];
  readonly loadgen?: "h2load" | "node";
  readonly connections?: number;
  readonly streams?: number;
  /** Extra node flags for the server process (e.g. --cpu-prof --cpu-prof-dir=...). */
  readonly serverNodeArgs?: readonly string[];
}

export interface RpcLevelResult {
  readonly logLevel: string;
  readonly pingRps: number[];
  readonly sendRps: number[];
  readonly pingRpsMedian: number;
  readonly sendRpsMedian: number;
  /** sendRpsMedian / pingRpsMedian (target >= 0.7). */
  readonly ratio: number;
  readonly latencyRps: number;
  readonly latencyP50: number[];
  readonly latencyP99: number[];
  readonly latencyP50Median: number;
  /** Target <= 20 ms. */
  readonly latencyP99Median: number;
  /** Ping at the same rate, for reference. */
  readonly pingLatencyP50Median: number;
  readonly pingLatencyP99Median: number;
  /** A bare node:http2 gRPC answer at the same rate (the machine's floor), for reference. */
  readonly floorLatencyP50Median: number;
  readonly floorLatencyP99Median: number;
  readonly messageBytes: number;
  readonly requestBytes: number;
}

export interface RpcResult {
  readonly tool: "h2load" | "node";
  readonly connections: number;
  readonly streams: number;
  readonly durationS: number;
  readonly reps: number;
  readonly levels: RpcLevelResult[];
}

const DOMAIN = "bench.example";
const MEMBERS = 10;
const MESSAGE_BYTES = 1024;

export async function runRpcBench(o: RpcOptions = {}): Promise<RpcResult> {
  const quick = o.quick === true;
  const reps = o.reps ?? (quick ? 2 : 5);
  const durationS = o.durationS ?? (quick ? 2 : 5);
  const warmupS = quick ? 0.5 : 1;
  const connections = o.connections ?? 4;
  const streams = o.streams ?? 32;
  let tool = o.loadgen ?? "h2load";
  if (tool === "h2load" && !hasH2load()) {
    log(H2LOAD_MISSING);
    tool = "node";
  }
  const levels: RpcLevelResult[] = [];
  for (const logLevel of o.logLevels ?? ["info", "warn"]) {
    levels.push(await runLevel({ logLevel, reps, durationS, warmupS, connections, streams, tool, serverNodeArgs: o.serverNodeArgs ?? [] }));
  }
  return { tool, connections, streams, durationS, reps, levels };
}

async function runLevel(p: {
  logLevel: string;
  reps: number;
  durationS: number;
  warmupS: number;
  connections: number;
  streams: number;
  tool: "h2load" | "node";
  serverNodeArgs: readonly string[];
}): Promise<RpcLevelResult> {
  const dir = mkdtempSync(join(tmpdir(), "mimi-bench-rpc-"));
  const certsDir = join(dir, "certs");
  const dataDir = join(dir, "data");
  const { ca } = devCerts(certsDir, DOMAIN);
  const server = await startServe({ domain: DOMAIN, dataDir, certsDir, logLevel: p.logLevel, nodeArgs: p.serverNodeArgs });
  const { transport, hub } = connect(server.url, ca);
  let floor: FloorServer | undefined;
  try {
    floor = await startFloorServer(join(certsDir, DOMAIN, "cert.pem"), join(certsDir, DOMAIN, "key.pem"));
    log(`rpc (log level ${p.logLevel}): server on port ${server.port}, building a ${MEMBERS}-member group`);
    const g = await buildGroup(hub, DOMAIN, MEMBERS);

    // One 1 KB PrivateMessage: the plaintext is sized so that the MLSMessage is MESSAGE_BYTES.
    const probe = await g.creator.prepareSend(new Uint8Array(MESSAGE_BYTES));
    const overhead = encodeMLSMessage(probe.message).length - MESSAGE_BYTES;
    const sent = await g.creator.prepareSend(new Uint8Array(MESSAGE_BYTES - overhead).fill(0x61));
    const state = sent.newState;
    const request = await buildDSRequest(
      { requestType: "send_message", sendMessageRequest: { applicationMessage: sent.message } },
      { kind: "member", senderIndex: state.privatePath.leafIndex, signaturePrivateKey: g.creator.signatureKeyPair.signKey, signature: g.creator.cs.signature },
    );
    const dsRequest = encodeDSRequest(request);
    const messageBytes = encodeMLSMessage(sent.message).length;

    const sendFile = join(dir, "send.bin");
    const pingFile = join(dir, "ping.bin");
    writeFileSync(sendFile, grpcFrame(toBinary(SubmitRequestSchema, create(SubmitRequestSchema, { dsRequest }))));
    writeFileSync(pingFile, grpcFrame(toBinary(PingRequestSchema, create(PingRequestSchema, {}))));

    // Samples through a gRPC client: both must answer OK (a DS error would throw).
    await hub.hub.ping({});
    await hub.hub.submit({ dsRequest });

    // A second connection to the server's database (WAL: concurrent readers, one writer at a time).
    const db = new Database(join(dataDir, "ds.sqlite"), { fileMustExist: true });
    db.pragma("busy_timeout = 10000");
    // Every member receives the group's feed (src/ds/fanout.ts): one entry per accepted send,
    // which each member pulls into its own queue when it reads.
    const receiving = Number(db.prepare("SELECT count(*) FROM feed_members WHERE until IS NULL").pluck().get());
    if (receiving !== MEMBERS) throw new Error(`${receiving} members receive the group feed, expected ${MEMBERS}`);
    // The feed's counter counts every accepted send (it survives acks).
    const appended = (): number => Number(db.prepare("SELECT coalesce(sum(last_seq), 0) AS n FROM queues WHERE queue LIKE 'feed:%'").pluck().get());
    // Between runs the recipients "acknowledge" everything, as consumers would, so the
    // queues do not grow by hundreds of thousands of entries over the bench.
    const drainQueues = (): void => {
      db.exec("DELETE FROM queue_entries");
      db.pragma("wal_checkpoint(TRUNCATE)");
    };
    const base = `https://127.0.0.1:${server.port}/mimi.ds.v1.HubService/`;
    const loadAt = (url: string, dataFile: string, rps?: number): Promise<LoadResult> =>
      runLoad(
        { url, dataFile, connections: p.connections, streams: p.streams, durationS: p.durationS, warmupS: p.warmupS, ...(rps !== undefined ? { rps } : {}) },
        p.tool,
      );
    const load = (method: "Ping" | "Submit", dataFile: string, rps?: number): Promise<LoadResult> => loadAt(base + method, dataFile, rps);
    const checkedSend = async (rps?: number): Promise<LoadResult> => {
      const before = appended();
      const r = await load("Submit", sendFile, rps);
      const grew = appended() - before;
      // h2load counts from the end of the warm-up; requests of the warm-up and ones cut off at the end also landed.
      if (r.ok !== r.done || grew < r.done) throw new Error(`send_message: ${r.done} answered, ${r.ok} OK, the group feed grew by ${grew}`);
      drainQueues();
      return r;
    };

    // Every answer of a short run checked for grpc-status 0 (Node load generator, no warm-up):
    // the group feed grew by exactly one entry per answered request (plus the ones cut off at the end).
    {
      const before = appended();
      const r = await runLoad({ url: base + "Submit", dataFile: sendFile, connections: p.connections, streams: p.streams, durationS: 1, warmupS: 0 }, "node");
      const grew = appended() - before;
      if (r.ok !== r.done || grew < r.done || grew > r.started) throw new Error(`send_message check: ${r.done} answered, ${r.ok} with grpc-status 0, ${r.started} sent, the group feed grew by ${grew}`);
      log(`  checked: ${r.ok}/${r.done} answers with grpc-status 0, the group feed (${MEMBERS} members) grew by ${grew} entries`);
    }

    const pingRps: number[] = [];
    const sendRps: number[] = [];
    for (let i = 0; i < p.reps; i++) {
      // Alternate the order so that neither always runs on a warmer (or more fragmented) process.
      const order = i % 2 === 0 ? (["ping", "send"] as const) : (["send", "ping"] as const);
      for (const what of order) {
        if (what === "ping") {
          const r = await load("Ping", pingFile);
          if (r.ok !== r.done) throw new Error(`ping: ${r.done} answered, ${r.ok} OK`);
          pingRps.push(r.rps);
        } else sendRps.push((await checkedSend()).rps);
      }
      log(`  rep ${i + 1}/${p.reps}: ping ${fmt(pingRps[i]!)} req/s, send_message ${fmt(sendRps[i]!)} req/s`);
    }
    const sendMedian = median(sendRps);
    const latencyRps = Math.max(1, Math.round(sendMedian / 2));
    const p50: number[] = [];
    const p99: number[] = [];
    const pingP50: number[] = [];
    const pingP99: number[] = [];
    const floorP50: number[] = [];
    const floorP99: number[] = [];
    for (let i = 0; i < p.reps; i++) {
      const r = await checkedSend(latencyRps);
      p50.push(r.p50);
      p99.push(r.p99);
      // Reference: the no-op RPC at the same rate (what the transport and the machine add).
      const q = await load("Ping", pingFile, latencyRps);
      pingP50.push(q.p50);
      pingP99.push(q.p99);
      const f = await loadAt(`https://127.0.0.1:${floor.port}/mimi.ds.v1.HubService/Ping`, pingFile, latencyRps);
      if (f.ok !== f.done) throw new Error(`floor: ${f.done} answered, ${f.ok} OK`);
      floorP50.push(f.p50);
      floorP99.push(f.p99);
      log(`  latency at ${latencyRps} req/s: send_message p50 ${fmt(r.p50)} ms, p99 ${fmt(r.p99)} ms (${fmt(r.rps)} req/s done); ping p50 ${fmt(q.p50)} ms, p99 ${fmt(q.p99)} ms; bare http2 p50 ${fmt(f.p50)} ms, p99 ${fmt(f.p99)} ms`);
    }
    db.close();
    const pingMedian = median(pingRps);
    return {
      logLevel: p.logLevel,
      pingRps,
      sendRps,
      pingRpsMedian: pingMedian,
      sendRpsMedian: sendMedian,
      ratio: sendMedian / pingMedian,
      latencyRps,
      latencyP50: p50,
      latencyP99: p99,
      latencyP50Median: median(p50),
      latencyP99Median: median(p99),
      pingLatencyP50Median: median(pingP50),
      pingLatencyP99Median: median(pingP99),
      floorLatencyP50Median: median(floorP50),
      floorLatencyP99Median: median(floorP99),
      messageBytes,
      requestBytes: dsRequest.length,
    };
  } finally {
    transport.close();
    await server.stop();
    await floor?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function rpcTable(r: RpcResult): string {
  const lines = [
    `RPC over gRPC/TLS (${r.tool}, ${r.connections} connections x ${r.streams} streams, ${r.durationS} s x ${r.reps} reps; medians)`,
    "log level | Ping req/s | SendMessage req/s | ratio (>= 0.70) | latency at req/s | p50 ms | p99 ms (<= 20) | Ping p50 / p99 ms | bare http2 p50 / p99 ms",
  ];
  for (const l of r.levels) {
    lines.push(
      `${l.logLevel.padEnd(9)} | ${fmt(l.pingRpsMedian).padStart(10)} | ${fmt(l.sendRpsMedian).padStart(17)} | ${l.ratio.toFixed(2).padStart(15)} | ${String(l.latencyRps).padStart(16)} | ${fmt(l.latencyP50Median).padStart(6)} | ${fmt(l.latencyP99Median).padStart(14)} | ${fmt(l.pingLatencyP50Median)} / ${fmt(l.pingLatencyP99Median)} | ${fmt(l.floorLatencyP50Median)} / ${fmt(l.floorLatencyP99Median)}`,
    );
  }
  return lines.join("\n");
}

export function parseRpcArgs(args: readonly string[]): RpcOptions {
  const val = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const num = (name: string): number | undefined => (val(name) !== undefined ? Number(val(name)) : undefined);
  const loadgen = val("loadgen");
  const o: { -readonly [K in keyof RpcOptions]: RpcOptions[K] } = { quick: args.includes("--quick") };
  if (num("reps") !== undefined) o.reps = num("reps");
  if (num("duration") !== undefined) o.durationS = num("duration");
  if (num("connections") !== undefined) o.connections = num("connections");
  if (num("streams") !== undefined) o.streams = num("streams");
  if (val("log-levels") !== undefined) o.logLevels = val("log-levels")!.split(",");
  if (loadgen === "node" || loadgen === "h2load") o.loadgen = loadgen;
  if (val("server-node-args") !== undefined) o.serverNodeArgs = val("server-node-args")!.split(" ");
  return o;
}

// Standalone: node dist/bench/rpc.js [options]
if (process.argv[1] !== undefined && /bench[/\\]rpc\.[jt]s$/.test(process.argv[1])) {
  const r = await runRpcBench(parseRpcArgs(process.argv.slice(2)));
  console.log(rpcTable(r));
}
