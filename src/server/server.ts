// One HTTP/2 TLS port serving gRPC, Connect and gRPC-Web (connect-node), with
// optional client certificates (mutual TLS between DSs), health, reflection,
// per-RPC logs, plain HTTP GET probes (/healthz, /readyz) and a graceful
// shutdown.
import http2 from "node:http2";
import type { Http2ServerRequest, Http2ServerResponse, Http2Session } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { pino, type Logger } from "pino";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import type { DSRequestHandler, HubInfoSource } from "../ds/handler.js";
import { buildRequestContext, requestContextKey, type DomainTrust } from "./context.js";
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
  /** Largest request message accepted; default 8 MiB. */
  readonly maxMessageBytes?: number;
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

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  /** Names of every served service (as in reflection's list_services). */
  readonly services: readonly string[];
  readonly health: HealthRegistry;
  /** Graceful shutdown; idempotent. */
  close(): Promise<void>;
}

export const defaultMaxMessageBytes = 8 * 1024 * 1024;
const defaultUnaryTimeoutMs = 30_000;
const defaultDrainTimeoutMs = 10_000;
/** After aborting the remaining calls, how long they get to end before connections are destroyed. */
const abortGraceMs = 1_000;

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const logger = options.logger ?? pino({ level: "info" });
  const extra = options.services ?? [];
  const served: DescService[] = [HubService, Health, ...reflectionServices, ...extra.map((r) => r.service)];
  const reflection = new ReflectionIndex(served);
  const health = new HealthRegistry(reflection.serviceNames);
  const shutdown = new AbortController();

  const routes = (router: ConnectRouter): void => {
    registerHub(router, {
      domain: options.domain,
      handler: options.handler,
      ...(options.version !== undefined ? { version: options.version } : {}),
      ...(options.hubInfo !== undefined ? { hubInfo: options.hubInfo } : {}),
      onInternalError: (err, ctx) =>
        logger.error({ err, rid: ctx.values.get(requestContextKey).requestId, service: ctx.service.typeName, method: ctx.method.name }, "handler failed"),
    });
    registerHealth(router, health);
    registerReflection(router, reflection);
    for (const route of extra) route.register(router);
  };

  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: options.maxMessageBytes ?? defaultMaxMessageBytes,
    // MLS messages are ciphertext and do not compress: never spend CPU gzipping
    // answers and stream entries (compressed requests are still accepted).
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    shutdownSignal: shutdown.signal,
    interceptors: [
      ...(options.interceptors ?? []),
      loggingInterceptor(logger),
      streamsEndUnavailable(shutdown.signal),
      unaryTimeout(options.unaryTimeoutMs ?? defaultUnaryTimeoutMs),
    ],
    contextValues: (req) => createContextValues().set(requestContextKey, buildRequestContext(req, options.domainTrust)),
  });

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
  });

  // In-flight calls, sessions and sockets, for draining and for the final close.
  let active = 0;
  let idle: (() => void)[] = [];
  const sessions = new Set<Http2Session>();
  const sockets = new Set<TLSSocket>();
  let draining = false;
  const probe = probeHandler(async () => (draining ? { ready: false, reason: "draining" } : (options.readiness?.() ?? { ready: true })));

  server.on("request", (req: Http2ServerRequest, res: Http2ServerResponse) => {
    // Kubernetes-style HTTP GET probes on the TLS port; everything else is an RPC.
    if (probe(req, res)) return;
    active++;
    let done = false;
    const finished = (): void => {
      if (done) return;
      done = true;
      active--;
      if (active === 0) for (const resolve of idle.splice(0)) resolve();
    };
    res.once("close", finished);
    // A call is over once its response is fully written, even when the client
    // still has request bytes in flight (an oversized message refused early
    // leaves the HTTP/2 stream half-open until the client resets it).
    if (req.httpVersionMajor === 2) req.stream.once("finish", finished);
    else res.once("finish", finished);
    // HTTP/1.1 has no GOAWAY: tell keep-alive clients not to reuse the connection.
    if (draining && req.httpVersionMajor === 1) res.setHeader("connection", "close");
    handler(req, res);
  });
  server.on("session", (session: Http2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (draining) session.close();
  });
  server.on("secureConnection", (socket: TLSSocket) => {
    sockets.add(socket);
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

  return { host, port, services: reflection.serviceNames, health, close };
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
