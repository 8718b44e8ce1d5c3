// A connect-node transport to a MIMI DS: one HTTP/2 TLS connection speaking
// gRPC (default), Connect or gRPC-Web, trusting a given CA and optionally
// presenting a client certificate (mutual TLS between DSs, where the server
// takes the peer's domain from the certificate).
import http2, { type ClientHttp2Stream, type OutgoingHttpHeaders, type SecureClientSessionOptions } from "node:http2";
import type { Interceptor, Transport } from "@connectrpc/connect";
import {
  Http2SessionManager,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

/** The RPC protocols one DS port serves. */
export type RpcProtocol = "grpc" | "connect" | "grpc-web";

type Pem = string | Buffer;

export interface DSTransportOptions {
  /** `https://host:port` of the DS. */
  readonly baseUrl: string;
  /** PEM CA certificate(s) that issued the server's certificate. */
  readonly ca: Pem | readonly Pem[];
  /** PEM client certificate chain, for mutual TLS (DS-to-DS calls). */
  readonly cert?: Pem;
  /** PEM private key of `cert`. */
  readonly key?: Pem;
  /** Default "grpc". */
  readonly protocol?: RpcProtocol;
  /** TLS server name to check, when it differs from the URL's host (e.g. connecting by IP). */
  readonly servername?: string;
  /** Per-call timeout unless a call sets its own. */
  readonly defaultTimeoutMs?: number;
  /** Largest response message accepted; default 16 MiB (the wire layer's own limit). */
  readonly readMaxBytes?: number;
  readonly interceptors?: readonly Interceptor[];
  /** Keep-alive PINGs on open streams (useful for long Receive / Subscribe streams). */
  readonly pingIntervalMs?: number;
  /**
   * Node's per-connection HTTP/2 memory budget in MB (`maxSessionMemory`, Node's
   * default 10). Request bytes the server has not read yet count against it, so
   * it must exceed the largest request sent; default 64.
   */
  readonly maxSessionMemoryMb?: number;
}

/** A Transport that owns its HTTP/2 connection and can close it. */
export interface DSTransport extends Transport {
  readonly baseUrl: string;
  readonly protocol: RpcProtocol;
  /** Closes the HTTP/2 connection (and any stream still open on it). */
  close(): void;
}

const DEFAULT_READ_MAX_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_SESSION_MEMORY_MB = 64;

/**
 * An Http2SessionManager that retires a connection once HTTP/2 refused a
 * stream on it for its memory budget (NGHTTP2_ENHANCE_YOUR_CALM): Node keeps
 * counting the unsent bytes of a request the server stopped reading, so such a
 * session refuses every later stream too. The session is closed gracefully
 * (other streams on it finish) and the next call opens a new connection.
 */
class SelfHealingSessionManager extends Http2SessionManager {
  override async request(
    method: string,
    path: string,
    headers: OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    const session = stream.session;
    stream.once("close", () => {
      if (stream.rstCode !== http2.constants.NGHTTP2_ENHANCE_YOUR_CALM) return;
      if (session !== undefined && session !== null && !session.closed && !session.destroyed) session.close();
    });
    return stream;
  }
}

/** `https://host:port`, bracketing IPv6 literals. */
export function dsBaseUrl(host: string, port: number): string {
  const h = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return `https://${h}:${port}`;
}

export function createDSTransport(options: DSTransportOptions): DSTransport {
  const url = new URL(options.baseUrl);
  if (url.protocol !== "https:") throw new Error(`DS transport needs an https:// URL, got ${options.baseUrl}`);
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new Error("a client certificate needs its key (and a key its certificate)");
  }
  const nodeOptions: SecureClientSessionOptions = {
    ca: options.ca as Pem | Pem[],
    ...(options.cert !== undefined ? { cert: options.cert, key: options.key } : {}),
    ...(options.servername !== undefined ? { servername: options.servername } : {}),
    minVersion: "TLSv1.2",
    maxSessionMemory: options.maxSessionMemoryMb ?? DEFAULT_MAX_SESSION_MEMORY_MB,
  };
  // Our own session manager, so that close() can end the connection: the
  // transports' internal one is not reachable.
  const sessionManager = new SelfHealingSessionManager(
    url,
    options.pingIntervalMs !== undefined ? { pingIntervalMs: options.pingIntervalMs } : {},
    nodeOptions,
  );
  const protocol = options.protocol ?? "grpc";
  const common = {
    baseUrl: options.baseUrl,
    sessionManager,
    readMaxBytes: options.readMaxBytes ?? DEFAULT_READ_MAX_BYTES,
    interceptors: [...(options.interceptors ?? [])],
    ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
  };
  let transport: Transport;
  switch (protocol) {
    case "grpc":
      transport = createGrpcTransport(common);
      break;
    case "connect":
      transport = createConnectTransport({ ...common, httpVersion: "2" });
      break;
    case "grpc-web":
      transport = createGrpcWebTransport({ ...common, httpVersion: "2" });
      break;
  }
  return {
    unary: transport.unary.bind(transport),
    stream: transport.stream.bind(transport),
    baseUrl: options.baseUrl,
    protocol,
    close: () => sessionManager.abort(),
  };
}
