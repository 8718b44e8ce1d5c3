// One HTTP/2 TLS port serving gRPC, Connect and gRPC-Web (connect-node), with
// optional client certificates (mutual TLS between DSs), health, reflection,
// per-RPC logs, CORS for configured browser origins, one request-size limit
// answered with too_large, connection limits, plain HTTP GET probes
// (/healthz, /readyz) and a graceful shutdown.
import http2 from "node:http2";
import type { Http2ServerRequest, Http2ServerResponse, Http2Session } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { createContextKey, createContextValues } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { pino, type Logger } from "pino";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import type { DSRequestHandler, HubInfoSource } from "../ds/handler.js";
import { buildRequestContext, callTransportKey, requestContextKey, type DomainTrust } from "./context.js";
import { CorsPolicy } from "./cors.js";
import { checkedMaxRequestBytes, connectReadMaxBytes, defaultMaxRequestBytes, guardRequestSize } from "./limits.js";
import { HealthRegistry, registerHealth } from "./health.js";
import { registerHub } from "./hub.js";
import { loggingInterceptor } from "./logging.js";
import { probeHandler, type Readiness } from "./probes.js";
import { ReflectionIndex, reflectionServices, registerReflection } from "./reflection.js";

/** A service served next to HubService (FanoutService, ClientService, ...). */
export interface ServiceRoute {
  readonly service: DescService;
  readonly register: (router: ConnectRouter) => void;
}

/** A ServiceRoute from a service descriptor and its implementation. */
export function serviceRoute<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): ServiceRoute {
  return { service, register: (router) => router.service(service, impl) };
}

/** PEM material. `ca` verifies client certificates (and names the peer domain). */
export interface TlsMaterial {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
}

export interface ServerOptions {
  /** The DS domain this server speaks for (answered by Ping). */
  readonly domain: string;
  readonly handler: DSRequestHandler;
  /** Answers HubService.HubInfo (the hub's external sender entry). */
  readonly hubInfo?: HubInfoSource;
  readonly tls: TlsMaterial;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0: a free port, reported in the result. */
  readonly port?: number;
  /** Further services; they are listed by reflection and reported by health. */
  readonly services?: readonly ServiceRoute[];
  readonly logger?: Logger;
  /**
   * Largest request accepted, in DS bytes (a SubmitRequest's ds_request; for
   * other RPCs their whole message); larger ones are answered with too_large.
   * Default and maximum 16 MiB (the wire layer's DecodeLimits).
   */
  readonly maxRequestBytes?: number;
  /** Browser origins (`https://app.example`, or `*`) allowed to call over CORS; default none. */
  readonly corsOrigins?: readonly string[];
  /** HTTP/2 and HTTP/1.1 limits and timeouts; each defaults to DEFAULT_CONNECTION_LIMITS. */
  readonly limits?: Partial<ConnectionLimits>;
  /** Unary calls without a shorter client deadline fail after this long; default 30 s. */
  readonly unaryTimeoutMs?: number;
  /** How long close() lets in-flight calls and streams run before aborting them; default 10 s. */
  readonly drainTimeoutMs?: number;
  /** Which CAs may vouch for a client certificate's domain (peers config); default: any CA in `tls.ca`. */
  readonly domainTrust?: DomainTrust;
  /** Runs last in close(), after every connection is gone (closes the store). */
  readonly onClose?: () => void | Promise<void>;
  /** This build's version, answered by HubInfo. */
  readonly version?: string;
  /** Whether the DS can serve (e.g. its store answers), for GET /readyz; draining is added here. */
  readonly readiness?: Readiness;
  /** Interceptors that run outside the logging one (metrics). */
  readonly interceptors?: readonly Interceptor[];
}

/** What one connection may hold, and for how long (docs/security.md, "Connections"). */
export interface ConnectionLimits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS of every HTTP/2 session. */
  readonly maxConcurrentStreams: number;
  /** Open server-streaming calls (Receive, Subscribe) per HTTP/2 session; more are refused with ResourceExhausted. */
  readonly maxStreamingCallsPerSession: number;
  /** An HTTP/2 session or HTTP/1.1 connection without an open call is closed after this long. */
  readonly idleTimeoutMs: number;
  /** HTTP/1.1: the request headers must be complete within this long. */
  readonly headersTimeoutMs: number;
  /**
   * The request body of a call that sends one message (unary, server-streaming)
   * must be complete within this long; else its stream is reset (HTTP/1.1: 408 and close).
   */
  readonly requestBodyTimeoutMs: number;
  /** Node's maxSessionMemory (MB) per HTTP/2 session: beyond it new streams are refused. */
  readonly maxSessionMemoryMb: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = Object.freeze({
  maxConcurrentStreams: 100,
  maxStreamingCallsPerSession: 16,
  idleTimeoutMs: 120_000,
  headersTimeoutMs: 10_000,
  requestBodyTimeoutMs: 30_000,
  maxSessionMemoryMb: 10,
});

/**
 * TLS 1.3, and TLS 1.2 with forward-secret AEAD suites only: no CBC or SHA-1
 * MAC suites (which HTTP/2 forbids anyway, RFC 9113 9.2.2), no static RSA.
 */
export const TLS_CIPHERS = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** What the server holds right now (tests, metrics). */
export interface ConnectionStats {
  readonly sessions: number;
  readonly http1Connections: number;
  readonly activeCalls: number;
  readonly streamingCalls: number;
  /** Since start: streaming calls refused, request bodies reset, and connections closed for idleness. */
  readonly refused: { readonly streamingCallsPerSession: number; readonly requestBodyTimeout: number; readonly idleClosed: number };
}

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  /** Names of every served service (as in reflection's list_services). */
  readonly services: readonly string[];
  readonly health: HealthRegistry;
  stats(): ConnectionStats;
  /** Graceful shutdown; idempotent. */
  close(): Promise<void>;
}

export { defaultMaxRequestBytes };
const defaultUnaryTimeoutMs = 30_000;
const defaultDrainTimeoutMs = 10_000;
/** After aborting the remaining calls, how long they get to end before connections are destroyed. */
const abortGraceMs = 1_000;

/** A call the server decided about before its handler ran (limits). */
interface CallAdmission {
  readonly refused?: string;
}
const callAdmissionKey = createContextKey<CallAdmission>({}, { description: "mimi-ds call admission" });

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const logger = options.logger ?? pino({ level: "info" });
  const extra = options.services ?? [];
  const served: DescService[] = [HubService, Health, ...reflectionServices, ...extra.map((r) => r.service)];
  const reflection = new ReflectionIndex(served);
  const health = new HealthRegistry(reflection.serviceNames);
  const shutdown = new AbortController();
  const maxRequestBytes = checkedMaxRequestBytes(options.maxRequestBytes ?? defaultMaxRequestBytes);
  const cors = new CorsPolicy(options.corsOrigins ?? []);
  if (cors.allows("*")) logger.warn("CORS: every origin may call this DS (--cors-origin '*')");
  else if (cors.enabled) logger.info({ origins: options.corsOrigins }, "CORS enabled");
  const limits: ConnectionLimits = { ...DEFAULT_CONNECTION_LIMITS, ...options.limits };
  // "/pkg.Service/Method" -> its kind, for the limits that depend on it.
  const methodKinds = new Map<string, string>();
  for (const svc of served) for (const m of svc.methods) methodKinds.set(`/${svc.typeName}/${m.name}`, m.methodKind);
  const admissions = new WeakMap<object, CallAdmission>();

  const routes = (router: ConnectRouter): void => {
    registerHub(router, {
      domain: options.domain,
      handler: options.handler,
      ...(options.version !== undefined ? { version: options.version } : {}),
      ...(options.hubInfo !== undefined ? { hubInfo: options.hubInfo } : {}),
      maxRequestBytes,
      onInternalError: (err, ctx, fields) =>
        logger.error({ err, rid: ctx.values.get(requestContextKey).requestId, service: ctx.service.typeName, method: ctx.method.name, ...fields }, "handler failed"),
    });
    registerHealth(router, health);
    registerReflection(router, reflection);
    for (const route of extra) route.register(router);
  };

  // connect-node's adapter, with the request-size guard under connect (limits.ts).
  const router = createConnectRouter({
    readMaxBytes: connectReadMaxBytes(maxRequestBytes),
    acceptCompression: [compressionGzip, compressionBrotli],
    // MLS messages are ciphertext and do not compress: never spend CPU gzipping
    // answers and stream entries (compressed requests are still accepted).
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    shutdownSignal: shutdown.signal,
    interceptors: [
      ...(options.interceptors ?? []),
      loggingInterceptor(logger),
      streamsEndUnavailable(shutdown.signal),
      unaryTimeout(options.unaryTimeoutMs ?? defaultUnaryTimeoutMs),
      refuseOverLimit(),
    ],
  });
  routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const handler = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    const uHandler = paths.get(req.url.split("?", 2)[0] ?? "");
    if (uHandler === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    const contextValues = createContextValues()
      .set(requestContextKey, buildRequestContext(req, options.domainTrust))
      .set(callAdmissionKey, admissions.get(req) ?? {})
      .set(callTransportKey, {
        reset: () => {
          if ("stream" in req && req.stream !== undefined) req.stream.close(http2.constants.NGHTTP2_CANCEL);
          else req.socket.destroy();
        },
      });
    const uReq = guardRequestSize(universalRequestFromNodeRequest(req, res, undefined, contextValues), maxRequestBytes);
    uHandler(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        logger.error({ err: reason, service: uHandler.service.typeName, method: uHandler.method.name }, "rpc handler failed");
      });
  };

  const server = http2.createSecureServer({
    allowHTTP1: true, // Connect and gRPC-Web over HTTP/1.1 (browsers, curl)
    cert: options.tls.cert,
    key: options.tls.key,
    ...(options.tls.ca !== undefined ? { ca: options.tls.ca as string | Buffer | (string | Buffer)[] } : {}),
    // Client certificates are optional at the TLS layer: clients have none,
    // peer DSs present one and the services that need it check `peerDomain`.
    requestCert: true,
    rejectUnauthorized: false,
    handshakeTimeout: 10_000,
    minVersion: "TLSv1.2",
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams },
    maxSessionMemory: limits.maxSessionMemoryMb,
  });
  // HTTP/1.1 (allowHTTP1): Node's own header and request timeouts, checked every second.
  // (Set on the server object, not typed by @types/node for http2, read when it starts listening.)
  Object.assign(server, {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestBodyTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
  });


  // In-flight calls, sessions and sockets, for draining and for the final close.
  let active = 0;
  let idle: (() => void)[] = [];
  const sessions = new Set<Http2Session>();
  const sockets = new Set<TLSSocket>();
  let draining = false;
  let streamingCalls = 0;
  const refused = { streamingCallsPerSession: 0, requestBodyTimeout: 0, idleClosed: 0 };
  const streamingBySession = new WeakMap<Http2Session, number>();
  // HTTP/1.1 connections: open calls and the idle timer of each.
  const h1Calls = new WeakMap<object, number>();

  const probe = probeHandler(async () => (draining ? { ready: false, reason: "draining" } : (options.readiness?.() ?? { ready: true })));

  server.on("request", (req: Http2ServerRequest, res: Http2ServerResponse) => {
    // Kubernetes-style HTTP GET probes on the TLS port; everything else is an RPC.
    if (probe(req, res)) return;
    active++;
    const kind = methodKinds.get(req.url.split("?", 1)[0] ?? "");
    const streaming = kind === "server_streaming" || kind === "bidi_streaming";
    const session = req.httpVersionMajor === 2 ? req.stream.session : undefined;
    if (streaming && session !== undefined && session !== null) {
      const n = (streamingBySession.get(session) ?? 0) + 1;
      streamingBySession.set(session, n);
      streamingCalls++;
      if (n > limits.maxStreamingCallsPerSession) {
        refused.streamingCallsPerSession++;
        admissions.set(req, { refused: `at most ${limits.maxStreamingCallsPerSession} streaming calls per connection` });
      }
    }
    // A request that sends one message must finish sending it in time (slow-body probes).
    const bodyTimer =
      req.httpVersionMajor === 2 && kind !== "client_streaming" && kind !== "bidi_streaming"
        ? setTimeout(() => {
            if (req.complete) return;
            refused.requestBodyTimeout++;
            logger.debug({ path: req.url }, "request body not complete in time: stream reset");
            req.stream.close(http2.constants.NGHTTP2_CANCEL);
          }, limits.requestBodyTimeoutMs)
        : undefined;
    bodyTimer?.unref();
    req.once("end", () => clearTimeout(bodyTimer));
    const socket = req.httpVersionMajor === 1 ? req.socket : undefined;
    if (socket !== undefined) h1Busy(socket, +1);
    let done = false;
    const finished = (): void => {
      if (done) return;
      done = true;
      active--;
      clearTimeout(bodyTimer);
      if (streaming && session !== undefined && session !== null) {
        streamingCalls--;
        streamingBySession.set(session, (streamingBySession.get(session) ?? 1) - 1);
      }
      if (socket !== undefined) h1Busy(socket, -1);
      if (active === 0) for (const resolve of idle.splice(0)) resolve();
    };
    res.once("close", finished);
    // A call is over once its response is fully written, even when the client
    // still has request bytes in flight (an oversized message refused early
    // leaves the HTTP/2 stream half-open until the client resets it).
    if (req.httpVersionMajor === 2) req.stream.once("finish", finished);
    else res.once("finish", finished);
    // connect-node writes a streamed answer message by message and waits for
    // 'drain' (flow control) or 'error'; a stream that is reset or whose peer
    // goes away while a write waits emits neither, and the handler's generator
    // would stay suspended forever with what it holds. Fail that write.
    res.once("close", () => {
      if (!res.writableFinished && res.listenerCount("drain") > 0 && res.listenerCount("error") > 0) {
        res.emit("error", new ConnectError("the stream closed while an answer was being written", Code.Aborted));
      }
    });
    // HTTP/1.1 has no GOAWAY: tell keep-alive clients not to reuse the connection.
    if (draining && req.httpVersionMajor === 1) res.setHeader("connection", "close");
    const verdict = cors.verdict(req.method, req.headers);
    if (verdict.kind === "preflight") {
      res.writeHead(verdict.status, verdict.headers);
      if (verdict.body !== undefined) res.end(verdict.body);
      else res.end();
      return;
    }
    if (verdict.kind === "allow") for (const [name, value] of Object.entries(verdict.headers)) res.setHeader(name, value);
    // A request refused before its body was read (too_large) would leave the
    // client sending into a stream nobody reads: once the answer is out, end the
    // stream with NO_ERROR (RFC 9113 8.1), which tells the client to stop.
    if (req.httpVersionMajor === 2) {
      res.once("finish", () => {
        if (!req.complete && !req.stream.destroyed) req.stream.close(http2.constants.NGHTTP2_NO_ERROR);
      });
    }
    handler(req, res);
  });
  /** Closes a connection that has held no call for idleTimeoutMs (armed whenever it has none). */
  const idleCloser = (close: () => void): { busy(): void; idle(): void; stop(): void } => {
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        refused.idleClosed++;
        close();
      }, limits.idleTimeoutMs);
      timer.unref();
    };
    arm();
    return { busy: () => clearTimeout(timer), idle: arm, stop: () => clearTimeout(timer) };
  };
  const h1Idle = new WeakMap<object, ReturnType<typeof idleCloser>>();
  function h1Busy(socket: object, delta: number): void {
    const n = (h1Calls.get(socket) ?? 0) + delta;
    h1Calls.set(socket, n);
    if (n > 0) h1Idle.get(socket)?.busy();
    else h1Idle.get(socket)?.idle();
  }

  server.on("session", (session: Http2Session) => {
    sessions.add(session);
    let open = 0;
    const idleness = idleCloser(() => {
      logger.debug("idle HTTP/2 session closed");
      session.close();
      // A peer that does not answer the GOAWAY keeps nothing open for long.
      setTimeout(() => session.destroy(), abortGraceMs).unref();
    });
    session.on("stream", (stream) => {
      open++;
      idleness.busy();
      stream.once("close", () => {
        if (--open === 0) idleness.idle();
      });
    });
    session.once("close", () => {
      idleness.stop();
      sessions.delete(session);
    });
    if (draining) session.close();
  });

  server.on("secureConnection", (socket: TLSSocket) => {
    sockets.add(socket);
    if (socket.alpnProtocol !== "h2") {
      const idleness = idleCloser(() => {
        logger.debug("idle HTTP/1.1 connection closed");
        socket.destroy();
      });
      h1Idle.set(socket, idleness);
      socket.once("close", () => idleness.stop());
    }
    socket.once("close", () => sockets.delete(socket));
  });

  server.on("sessionError", (err: Error) => logger.debug({ err: err.message }, "http2 session error"));
  server.on("tlsClientError", (err: Error) => logger.debug({ err: err.message }, "tls handshake failed"));

  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : (options.port ?? 0);

  const whenIdle = (ms: number): Promise<boolean> =>
    active === 0
      ? Promise.resolve(true)
      : new Promise((resolve) => {
          const timer = setTimeout(() => {
            idle = idle.filter((r) => r !== done);
            resolve(false);
          }, ms);
          const done = (): void => {
            clearTimeout(timer);
            resolve(true);
          };
          idle.push(done);
        });

  const sessionsClosed = async (ms: number): Promise<void> => {
    const deadline = performance.now() + ms;
    while (sessions.size > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const started = performance.now();
      draining = true;
      health.drain();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // GOAWAY: no new streams on existing sessions; open ones carry on.
      for (const session of sessions) session.close();
      logger.info({ inFlight: active }, "draining");
      if (!(await whenIdle(options.drainTimeoutMs ?? defaultDrainTimeoutMs))) {
        logger.warn({ inFlight: active }, "drain timeout: aborting remaining calls");
        shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
        await whenIdle(abortGraceMs);
      }
      // Idle HTTP/1.1 keep-alive connections have nothing to finish.
      for (const socket of sockets) if (socket.alpnProtocol !== "h2") socket.destroy();
      // HTTP/2 sessions end by themselves after GOAWAY once their last stream has
      // flushed its trailers; whatever is left after a grace period (unresponsive
      // peers) goes now: an in-process HTTP/2 server otherwise never finishes closing.
      await sessionsClosed(abortGraceMs);
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      await closed;
      logger.info({ ms: Math.round(performance.now() - started) }, "closed");
      await options.onClose?.();
    })();
    return closing;
  };

  const stats = (): ConnectionStats => ({
    sessions: sessions.size,
    http1Connections: [...sockets].filter((s) => s.alpnProtocol !== "h2").length,
    activeCalls: active,
    streamingCalls,
    refused: { ...refused },
  });

  return { host, port, services: reflection.serviceNames, health, stats, close };
}

/** Calls the server refused before their handler (a limit): ResourceExhausted, with the reason. */
function refuseOverLimit(): Interceptor {
  return (next) => async (req) => {
    const why = req.contextValues.get(callAdmissionKey).refused;
    if (why !== undefined) throw new ConnectError(why, Code.ResourceExhausted);
    return next(req);
  };
}


/**
 * A stream cut short by the shutdown ends with Unavailable even when its
 * handler simply returns on abort: the client must learn to resume elsewhere,
 * not that the stream is complete.
 */
function streamsEndUnavailable(shutdown: AbortSignal): Interceptor {
  return (next) => async (req) => {
    const res = await next(req);
    if (!res.stream) return res;
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        yield* messages;
        if (shutdown.aborted) throw ConnectError.from(shutdown.reason);
      })(),
    };
  };
}

/** Unary calls get a server-side deadline when the client set none (or a longer one). */
function unaryTimeout(ms: number): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return next(req);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ConnectError(`no answer within ${ms} ms`, Code.DeadlineExceeded)), ms);
    });
    try {
      return await Promise.race([next(req), expired]);
    } finally {
      clearTimeout(timer);
    }
  };
}
