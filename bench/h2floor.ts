// The machine's floor for the RPC bench's latency: a bare node:http2 TLS server
// (same certificate, same loopback, same h2load settings) that answers every
// POST with one empty gRPC message and grpc-status 0, without connect-node and
// without any DS work. It runs in its own process, like the real server.
//
//   node dist/bench/h2floor.js CERT KEY   -> prints {"port":N} once listening
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { nodeArgsToRun } from "./lib.js";

export interface FloorServer {
  readonly port: number;
  stop(): Promise<void>;
}

/** Starts the floor server as a child process on a free loopback port. */
export async function startFloorServer(certPath: string, keyPath: string): Promise<FloorServer> {
  const child: ChildProcess = spawn(process.execPath, [...nodeArgsToRun(import.meta.url), "--serve", certPath, keyPath], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d) => {
      out += String(d);
      const m = /\{"port":(\d+)\}/.exec(out);
      if (m !== null) resolve(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`floor server exited ${code}`)));
  });
  return {
    port,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

function serve(certPath: string, keyPath: string): void {
  const server = http2.createSecureServer({ cert: readFileSync(certPath), key: readFileSync(keyPath) });
  const emptyMessage = new Uint8Array(5); // flag 0, length 0
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.on("data", () => undefined);
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(emptyMessage);
    });
    stream.on("error", () => undefined);
  });
  // Sessions are closed on SIGTERM, or server.close() would wait for h2load's idle ones.
  const sessions = new Set<http2.Http2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  process.once("SIGTERM", () => {
    for (const s of sessions) s.destroy();
    server.close(() => process.exit(0));
  });
  server.listen(0, "127.0.0.1", () => {
    const a = server.address();
    process.stdout.write(JSON.stringify({ port: typeof a === "object" && a !== null ? a.port : 0 }) + "\n");
  });
}

if (process.argv[2] === "--serve") serve(process.argv[3]!, process.argv[4]!);
