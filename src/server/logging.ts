// One structured log line per RPC: its request id (`rid`, also sent back in
// the x-request-id header), service, method, status code, duration and the
// peer (verified domain, else address). Payloads and headers are never logged.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { requestContextKey } from "./context.js";

/** gRPC's canonical status names ("ok", "invalid_argument", ...). */
export function codeName(code: Code | 0): string {
  if (code === 0) return "ok";
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

export function loggingInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const start = performance.now();
    const rc = req.contextValues.get(requestContextKey);
    let logged = false;
    const log = (code: Code | 0, err?: unknown): void => {
      if (logged) return;
      logged = true;
      const fields = {
        rid: rc.requestId,
        service: req.service.typeName,
        method: req.method.name,
        protocol: req.header.get("content-type")?.split(/[;+]/)[0],
        code: codeName(code),
        ms: Math.round((performance.now() - start) * 100) / 100,
        peer: rc.peerDomain ?? rc.remoteAddress,
        ...(code === Code.Internal && err instanceof ConnectError ? { error: err.rawMessage } : {}),
      };
      logger.info(fields, "rpc");
    };
    const rid = rc.requestId;
    try {
      const res = await next(req);
      if (rid !== undefined) res.header.set("x-request-id", rid);
      if (!res.stream) {
        log(0);
        return res;
      }
      const messages = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
            log(0);
          } catch (err) {
            log(ConnectError.from(err).code, err);
            throw err;
          } finally {
            // The consumer stopped early (client gone): the call was cancelled.
            log(Code.Canceled);
          }
        })(),
      };
    } catch (err) {
      const e = ConnectError.from(err);
      log(e.code, err);
      if (rid !== undefined) e.metadata.set("x-request-id", rid);
      throw e;
    }
  };
}
