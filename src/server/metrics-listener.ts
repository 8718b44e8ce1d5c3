// The admin listener (serve --metrics-listen): plain HTTP, as Prometheus and
// probes expect, serving GET /metrics (the text exposition), /healthz and
// /readyz. It carries no RPC and no data of anyone's, only counters; still,
// keep it on loopback or a private network (docs/operations.md).
import http from "node:http";
import type { Logger } from "pino";
import type { DSMetrics } from "./metrics.js";
import { probeHandler, type Readiness } from "./probes.js";

export interface MetricsListener {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startMetricsListener(o: {
  readonly host: string;
  readonly port: number;
  readonly metrics: DSMetrics;
  readonly readiness: Readiness;
  readonly logger?: Logger;
}): Promise<MetricsListener> {
  const probe = probeHandler(o.readiness);
  const server = http.createServer((req, res) => {
    if (probe(req, res)) return;
    const path = (req.url ?? "").split("?", 1)[0];
    if (path === "/metrics" && (req.method === "GET" || req.method === "HEAD")) {
      o.metrics.scrape().then(
        (text) => {
          res.writeHead(200, { "content-type": o.metrics.contentType, "cache-control": "no-store" });
          res.end(req.method === "HEAD" ? undefined : text);
        },
        (err: unknown) => {
          o.logger?.error({ err }, "metrics scrape failed");
          res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
          res.end("scrape failed\n");
        },
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
    res.end("not found: this listener serves /metrics, /healthz and /readyz\n");
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : o.port;
  return {
    host: o.host,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
