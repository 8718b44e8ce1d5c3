// Plain HTTP GET probes, for load balancers and Kubernetes (httpGet probes,
// also with scheme HTTPS on the DS's own TLS port): /healthz answers 200
// while the process serves HTTP at all (liveness); /readyz answers 200 when
// the DS can serve requests (its store answers, it is not draining), else 503
// with the reason (readiness). Anything else is not a probe.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";

export interface ReadyState {
  readonly ready: boolean;
  /** Why not, in a few words (answered in the body of a 503). */
  readonly reason?: string;
}

export type Readiness = () => ReadyState | Promise<ReadyState>;

export const HEALTHZ = "/healthz";
export const READYZ = "/readyz";

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

/** A request handler that answers the probe paths and returns false for anything else. */
export function probeHandler(readiness: Readiness): (req: Req, res: Res) => boolean {
  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const path = (req.url ?? "").split("?", 1)[0];
    if (path !== HEALTHZ && path !== READYZ) return false;
    const answer = (status: number, body: string): void => {
      // The two response types share these members but not one writeHead signature.
      const r = res as ServerResponse;
      r.statusCode = status;
      r.setHeader("content-type", "text/plain; charset=utf-8");
      r.setHeader("cache-control", "no-store");
      if (req.method === "HEAD") r.end();
      else r.end(`${body}\n`);
    };
    if (path === HEALTHZ) {
      answer(200, "ok");
      return true;
    }
    Promise.resolve()
      .then(readiness)
      .then(
        (s) => answer(s.ready ? 200 : 503, s.ready ? "ready" : `not ready: ${s.reason ?? "unknown"}`),
        (err: unknown) => answer(503, `not ready: ${(err as Error).message ?? String(err)}`),
      );
    return true;
  };
}
