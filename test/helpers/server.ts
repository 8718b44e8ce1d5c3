// Start an in-process server over TLS with the dev CA, and clients for it.
import { pino, type Logger } from "pino";
import { Writable } from "node:stream";
import type { DSRequestHandler, HandledRequest, RequestContext } from "../../src/ds/handler.js";
import { startServer, type RunningServer, type ServerOptions } from "../../src/server/index.js";
import type { DevCa } from "./devca.js";

export interface TestServer extends RunningServer {
  readonly domain: string;
  readonly url: string;
  /** Parsed JSON log lines written so far. */
  readonly logs: Record<string, unknown>[];
}

/** A logger that keeps its JSON lines in memory (and prints nothing). */
export function memoryLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line));
      cb();
    },
  });
  return { logger: pino({ level: "debug" }, sink), lines };
}

export async function startTestServer(
  ca: DevCa,
  domain: string,
  handler: DSRequestHandler,
  extra: Partial<Omit<ServerOptions, "domain" | "handler">> = {},
): Promise<TestServer> {
  const { logger, lines } = memoryLogger();
  const cert = ca.domain(domain);
  const server = await startServer({
    domain,
    handler,
    tls: { cert: cert.cert, key: cert.key, ca: ca.ca },
    logger,
    ...extra,
  });
  return { ...server, close: server.close, domain, url: `https://localhost:${server.port}`, logs: lines };
}

/**
 * A DSRequestHandler for transport tests: it records what it was given and
 * answers with `respond` (default: echo the bytes back as the response).
 */
export function recordingHandler(
  respond: (bytes: Uint8Array, ctx: RequestContext) => Promise<HandledRequest> | HandledRequest = (bytes) => ({
    response: bytes,
  }),
): DSRequestHandler & { readonly calls: { bytes: Uint8Array; ctx: RequestContext }[] } {
  const calls: { bytes: Uint8Array; ctx: RequestContext }[] = [];
  return {
    calls,
    async handle(bytes, ctx) {
      calls.push({ bytes, ctx });
      return respond(bytes, ctx);
    },
  };
}
