// CORS for browser clients (Connect and gRPC-Web from a page on another
// origin). Off unless origins are configured: the DS serves no cookies or
// other ambient credentials (every DSRequest and ClientService call carries
// its own signature), so CORS only decides which pages may read answers.
// The header lists are connect-es's own (`cors` of @connectrpc/connect), so
// they follow the protocols as connect-es changes them.
import type { IncomingHttpHeaders } from "node:http";
import { cors as connectCors } from "@connectrpc/connect";

/** How long a browser may cache a preflight answer (seconds). */
const preflightMaxAgeSeconds = 7200;

export const corsAllowedMethods: readonly string[] = connectCors.allowedMethods;
export const corsAllowedHeaders: readonly string[] = connectCors.allowedHeaders;
/** Response headers a page may read: gRPC-Web status and error details among them. */
export const corsExposedHeaders: readonly string[] = [
  ...connectCors.exposedHeaders,
  // Connect unary trailers travel as headers with this prefix.
  "Trailer-Grpc-Status",
  "Trailer-Grpc-Message",
  "Trailer-Grpc-Status-Details-Bin",
  // The request id of the call's log lines (docs/operations.md).
  "X-Request-Id",
];

export class CorsConfigError extends Error {
  override readonly name = "CorsConfigError";
}

/**
 * A checked origin: `*` (any origin) or exactly `scheme://host[:port]` as a
 * browser sends it in `Origin` (no path, no trailing slash, default port left out).
 */
export function parseCorsOrigin(value: string): string {
  if (value === "*") return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CorsConfigError(`--cors-origin wants an origin like https://app.example.com, got ${JSON.stringify(value)}`);
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.origin !== value) {
    throw new CorsConfigError(
      `--cors-origin wants an origin exactly as browsers send it (scheme://host[:port], no path or trailing slash), got ${JSON.stringify(value)}` +
        (url.origin !== "null" && url.origin !== value ? `; did you mean ${url.origin}?` : ""),
    );
  }
  return value;
}

/** What the server does with one request. */
export type CorsVerdict =
  /** Not a CORS request, or CORS is off: serve it as usual. */
  | { readonly kind: "pass" }
  /** A cross-origin request from an allowed origin: serve it with these headers. */
  | { readonly kind: "allow"; readonly headers: Readonly<Record<string, string>> }
  /** A preflight: answer it right away. */
  | { readonly kind: "preflight"; readonly status: number; readonly headers: Readonly<Record<string, string>>; readonly body?: string };

export class CorsPolicy {
  private readonly any: boolean;
  private readonly origins: ReadonlySet<string>;

  constructor(origins: readonly string[]) {
    const checked = origins.map(parseCorsOrigin);
    this.any = checked.includes("*");
    this.origins = new Set(checked);
  }

  get enabled(): boolean {
    return this.any || this.origins.size > 0;
  }

  allows(origin: string): boolean {
    return this.any || this.origins.has(origin);
  }

  verdict(method: string | undefined, headers: IncomingHttpHeaders): CorsVerdict {
    const origin = headers.origin;
    const preflight = method === "OPTIONS" && headers["access-control-request-method"] !== undefined;
    if (origin === undefined || (!this.enabled && !preflight)) return { kind: "pass" };
    // Caches must not hand one origin's answer to another.
    const vary = { vary: "Origin" };
    if (!this.allows(origin)) {
      if (!preflight) return { kind: "pass" }; // no CORS headers: the browser withholds the answer
      return {
        kind: "preflight",
        status: 403,
        headers: { ...vary, "content-type": "text/plain; charset=utf-8" },
        body: `origin ${origin} is not allowed by this DS (serve --cors-origin)\n`,
      };
    }
    const allowOrigin = { "access-control-allow-origin": this.any ? "*" : origin, ...vary };
    if (!preflight) return { kind: "allow", headers: { ...allowOrigin, "access-control-expose-headers": corsExposedHeaders.join(", ") } };
    return {
      kind: "preflight",
      status: 204,
      headers: {
        ...allowOrigin,
        "access-control-allow-methods": corsAllowedMethods.join(", "),
        "access-control-allow-headers": corsAllowedHeaders.join(", "),
        "access-control-max-age": String(preflightMaxAgeSeconds),
      },
    };
  }
}
