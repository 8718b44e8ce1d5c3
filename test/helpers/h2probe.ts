// Raw HTTP/2 and TLS clients for attack probes: gRPC calls that never read
// their answer, half-sent bodies and headers, idle connections. Built on
// node:http2 / node:tls directly, so that nothing (no client library) reads
// on the attacker's behalf or finishes what it leaves unfinished.
import http2 from "node:http2";
import tls from "node:tls";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { create, toBinary } from "@bufbuild/protobuf";

export interface ProbeTls {
  readonly ca: Buffer;
}

/** An HTTP/2 session to `port` whose streams are read only by the caller; its receive window stays the default 64 KiB. */
export function h2session(port: number, t: ProbeTls): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://localhost:${port}`, { ca: t.ca, settings: { initialWindowSize: 65_535 } });
    session.once("remoteSettings", () => resolve(session));
    session.once("error", reject);
  });
}

/** One gRPC message frame (uncompressed). */
export function grpcFrame<T extends DescMessage>(schema: T, msg: MessageInitShape<T>): Buffer {
  const body = toBinary(schema, create(schema, msg));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** A gRPC request on `session`; with `body`, sent and half-closed; the stream is never read (paused). */
export function grpcStream(session: http2.ClientHttp2Session, path: string, body?: Buffer): http2.ClientHttp2Stream {
  const stream = session.request({
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.pause();
  stream.on("error", () => undefined);
  if (body !== undefined) stream.end(body);
  return stream;
}

/** Resolves when the stream is closed, with its RST_STREAM code (0: closed normally). */
export function closed(stream: http2.ClientHttp2Stream): Promise<number> {
  return new Promise((resolve) => {
    if (stream.closed) resolve(stream.rstCode ?? 0);
    else stream.once("close", () => resolve(stream.rstCode ?? 0));
  });
}

const socketEnds = new WeakMap<tls.TLSSocket, Promise<string>>();

/** A TLS connection speaking HTTP/1.1 (ALPN), for header and body probes. */
export function h1socket(port: number, t: ProbeTls): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: "127.0.0.1", servername: "localhost", ca: t.ca, ALPNProtocols: ["http/1.1"] }, () => resolve(s));
    // Listen from the start: the server may close it before the caller looks.
    let data = "";
    s.on("data", (d) => (data += String(d)));
    socketEnds.set(s, new Promise((r) => s.once("close", () => r(data))));
    s.once("error", reject);
    s.on("error", () => undefined);
  });
}

/** Resolves when the socket is closed (by the server), with what it sent back. */
export function socketClosed(s: tls.TLSSocket): Promise<string> {
  return socketEnds.get(s)!;
}

/** Resolves when the session is closed (also if it already is). */
export function sessionClosed(s: http2.ClientHttp2Session): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) resolve();
    else s.once("close", () => resolve());
  });
}

/** The grpc-status a stream ended with (trailers-only answers carry it in the headers), once it ends. */
export function grpcStatus(stream: http2.ClientHttp2Stream): Promise<string | undefined> {
  return new Promise((resolve) => {
    let status: string | undefined;
    stream.once("response", (h) => (status ??= h["grpc-status"] as string | undefined));
    stream.once("trailers", (h) => (status ??= h["grpc-status"] as string | undefined));
    stream.once("close", () => resolve(status));
  });
}

/** Resident set size of a process (Linux /proc), in MiB. */
export async function rssMiB(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
  return Math.round(kb / 1024);
}
