// Per-call context the transport derives from the connection: the verified peer
// domain of a mutual-TLS caller and its address. Handlers read it with
// `requestContext(ctx)`; the logging interceptor reads it for the `peer` field.
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { RequestContext } from "../ds/handler.js";

export const requestContextKey = createContextKey<RequestContext>({}, { description: "mimi-ds request context" });

/**
 * The HTTP-level side of a call, for handlers that must end a call its peer
 * does not read: an error cannot reach a stream stuck in a write that waits
 * for the peer's flow-control window.
 */
export interface CallTransport {
  /** Resets the call's HTTP/2 stream (CANCEL); on HTTP/1.1 closes its connection. */
  reset(): void;
}
export const callTransportKey = createContextKey<CallTransport | undefined>(undefined, { description: "mimi-ds call transport" });

/** The CallTransport of a call (undefined outside the server, e.g. in-process routers). */
export function callTransport(ctx: HandlerContext): CallTransport | undefined {
  return ctx.values.get(callTransportKey);
}

/** The RequestContext of a call, as set by the server for every request. */
export function requestContext(ctx: HandlerContext): RequestContext {
  return ctx.values.get(requestContextKey);
}

// One TLS connection carries many HTTP/2 streams: parse its certificate once.
const peerDomainCache = new WeakMap<TLSSocket, string | null>();

/** The TLS socket under a request, for HTTP/2 (session socket) and HTTP/1.1 alike. */
export function tlsSocketOf(req: IncomingMessage | Http2ServerRequest): TLSSocket | undefined {
  const socket = "stream" in req && req.stream !== undefined ? req.stream.session?.socket : req.socket;
  if (socket === undefined || socket === null) return undefined;
  // HTTP/2 hands out a Proxy of the socket: probe with a property read, not `in`.
  return typeof (socket as Partial<TLSSocket>).getPeerCertificate === "function" ? (socket as TLSSocket) : undefined;
}

const dnsName = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * The DS domain a client certificate speaks for: its first subjectAltName DNS
 * entry, and only when the chain was verified against our CA (`authorized`).
 * Certificates without a DNS SAN name no domain (the CN is not trusted for this).
 */
export function peerDomainOf(socket: TLSSocket, trust?: DomainTrust): string | undefined {
  const cached = peerDomainCache.get(socket);
  if (cached !== undefined) return cached ?? undefined;
  let domain: string | null = null;
  if (socket.authorized) {
    const cert = socket.getPeerCertificate(true);
    domain = firstDnsSan(cert?.subjectaltname ?? "") ?? null;
    // A certificate speaks for a domain only if it chains to the CA configured for that
    // domain: a peer trusted for its own name must not pose as another peer.
    if (domain !== null && trust !== undefined && !chainsTo(cert, trust(domain))) domain = null;
  }
  peerDomainCache.set(socket, domain);
  return domain ?? undefined;
}

/** The CA certificates (DER) allowed to vouch for a domain; undefined = any CA the server trusts. */
export type DomainTrust = (domain: string) => readonly Buffer[] | undefined;

function chainsTo(cert: DetailedPeerCertificate, cas: readonly Buffer[] | undefined): boolean {
  if (cas === undefined) return true;
  const seen = new Set<DetailedPeerCertificate>();
  for (let c: DetailedPeerCertificate | undefined = cert; c !== undefined && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    if (cas.some((ca) => ca.equals(c!.raw))) return true;
  }
  return false;
}

/** First "DNS:" entry of Node's subjectaltname string ("DNS:a, IP Address:1.2.3.4"). */
export function firstDnsSan(subjectAltName: string): string | undefined {
  for (const entry of subjectAltName.split(", ")) {
    if (!entry.startsWith("DNS:")) continue;
    const name = entry.slice(4).toLowerCase();
    // Names with unusual characters come quoted; they are not DS domains.
    if (dnsName.test(name)) return name;
  }
  return undefined;
}

// Request ids: a random per-process prefix and a counter (unique, cheap, no
// crypto per call); a caller's own x-request-id is kept when it is short and plain.
const idPrefix = `${Math.random().toString(36).slice(2, 8)}-`;
let idCounter = 0;
const plainId = /^[A-Za-z0-9._:-]{1,64}$/;

/** The id of a call: the caller's x-request-id if well-formed, else a new one. */
export function requestIdOf(header: string | string[] | undefined): string {
  if (typeof header === "string" && plainId.test(header)) return header;
  return idPrefix + (++idCounter).toString(36);
}

export function buildRequestContext(req: IncomingMessage | Http2ServerRequest, trust?: DomainTrust): RequestContext {
  const socket = tlsSocketOf(req);
  const peerDomain = socket !== undefined ? peerDomainOf(socket, trust) : undefined;
  const remoteAddress = socket?.remoteAddress;
  return {
    ...(peerDomain !== undefined ? { peerDomain } : {}),
    ...(remoteAddress !== undefined ? { remoteAddress } : {}),
    requestId: requestIdOf(req.headers["x-request-id"]),
  };
}
