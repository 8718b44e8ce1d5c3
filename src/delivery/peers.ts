// Federation peers: the other DSs this one talks to, from a JSON file
// (--peers FILE):
//
//   [{ "domain": "b.example",
//      "endpoint": "https://ds.b.example:8443",
//      "ca": "certs/b-ca.pem",                 // PEM, relative to the file
//      "dsSignatureKey": "<base64 Ed25519 public key of b.example's hub>" }]
//
// and the mutual-TLS transport used for every DS-to-DS call (Subscribe to a
// hub's fanout, proxied DSRequests, KeyPackage fetches).
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { createDSTransport, type DSTransport, type RpcProtocol } from "../client/transport.js";

export interface Peer {
  /** DS domain, lower case. */
  readonly domain: string;
  /** `https://host:port` of the peer DS. */
  readonly endpoint: string;
  /** Path of the PEM CA file (as resolved). */
  readonly caPath: string;
  /** PEM CA certificate(s) that issue the peer's server and client certificates. */
  readonly ca: Buffer;
  /** Raw Ed25519 public key that verifies the peer hub's DSFanoutRequests. */
  readonly dsSignatureKey: Uint8Array;
}

export class PeersConfigError extends Error {
  override readonly name = "PeersConfigError";
}

const domainPattern = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const ED25519_KEY_LEN = 32;

/** The configured peers, by domain. */
export class PeerDirectory {
  private readonly byDomain: ReadonlyMap<string, Peer>;

  constructor(readonly peers: readonly Peer[]) {
    const m = new Map<string, Peer>();
    for (const p of peers) {
      if (m.has(p.domain)) throw new PeersConfigError(`peer ${p.domain} is configured twice`);
      m.set(p.domain, p);
    }
    this.byDomain = m;
  }

  get(domain: string): Peer | undefined {
    return this.byDomain.get(domain.toLowerCase());
  }

  /**
   * Every peer's CA, for the server's `tls.ca` (so their client certificates
   * verify), after `own` (the CA of this domain's own clients/instances, if any).
   */
  caBundle(own?: Buffer | string): Buffer[] {
    const out: Buffer[] = own !== undefined ? [Buffer.from(own)] : [];
    const seen = new Set(out.map((b) => b.toString("latin1")));
    for (const p of this.peers) {
      const k = p.ca.toString("latin1");
      if (!seen.has(k)) (seen.add(k), out.push(p.ca));
    }
    return out;
  }
}

/** Reads and validates a peers file; CA paths are relative to the file. */
export function loadPeers(file: string): PeerDirectory {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new PeersConfigError(`${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PeersConfigError(`${file}: not JSON (${(err as Error).message})`);
  }
  return parsePeers(json, { baseDir: dirname(resolve(file)), source: file });
}

/** Validates parsed peers JSON; `readCa` reads a CA file (default: from disk). */
export function parsePeers(
  json: unknown,
  options: { readonly baseDir?: string; readonly source?: string; readonly readCa?: (path: string) => Buffer } = {},
): PeerDirectory {
  const src = options.source ?? "peers";
  const fail = (where: string, why: string): never => {
    throw new PeersConfigError(`${src}: ${where}: ${why}`);
  };
  if (!Array.isArray(json)) fail("top level", "want a JSON array of {domain, endpoint, ca, dsSignatureKey}");
  const readCa = options.readCa ?? ((p: string) => readFileSync(p));
  const peers: Peer[] = [];
  (json as unknown[]).forEach((entry, i) => {
    const at = `[${i}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) fail(at, "want an object");
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!["domain", "endpoint", "ca", "dsSignatureKey"].includes(k)) fail(`${at}.${k}`, "unknown field");
    }
    const str = (k: string): string => {
      const v = e[k];
      if (typeof v !== "string" || v === "") fail(`${at}.${k}`, "required string");
      return v as string;
    };
    const domain = str("domain").toLowerCase();
    if (!domainPattern.test(domain)) fail(`${at}.domain`, `not a DNS domain name: ${JSON.stringify(domain)}`);
    const endpoint = str("endpoint");
    let url: URL | undefined;
    try {
      url = new URL(endpoint);
    } catch {
      fail(`${at}.endpoint`, `not a URL: ${JSON.stringify(endpoint)}`);
    }
    if (url!.protocol !== "https:" || url!.pathname !== "/" || url!.search !== "" || url!.hash !== "") {
      fail(`${at}.endpoint`, `want https://host:port, got ${JSON.stringify(endpoint)}`);
    }
    const caPath = resolve(options.baseDir ?? ".", str("ca"));
    let ca: Buffer;
    try {
      ca = readCa(caPath);
    } catch (err) {
      return fail(`${at}.ca`, `cannot read ${caPath}: ${(err as Error).message}`);
    }
    if (!ca.toString("latin1").includes("-----BEGIN CERTIFICATE-----")) fail(`${at}.ca`, `${caPath} holds no PEM certificate`);
    const keyText = str("dsSignatureKey");
    const key = Buffer.from(keyText, "base64");
    if (key.length !== ED25519_KEY_LEN || key.toString("base64").replace(/=+$/, "") !== keyText.replace(/=+$/, "")) {
      fail(`${at}.dsSignatureKey`, `want the base64 of a ${ED25519_KEY_LEN}-byte Ed25519 public key`);
    }
    peers.push({ domain, endpoint: endpoint.replace(/\/$/, ""), caPath, ca, dsSignatureKey: new Uint8Array(key) });
  });
  try {
    return new PeerDirectory(peers);
  } catch (err) {
    return fail("peers", (err as Error).message);
  }
}

/** This DS's own client certificate for calls to peers. */
export interface OwnTls {
  readonly cert: Buffer | string;
  readonly key: Buffer | string;
}

export interface PeerTransportOptions {
  readonly protocol?: RpcProtocol;
  readonly defaultTimeoutMs?: number;
  /** HTTP/2 keep-alive PINGs on long streams (default 30 s). */
  readonly pingIntervalMs?: number;
}

/**
 * A mutual-TLS transport to a peer DS: trusts only the peer's CA and presents
 * our certificate, whose DNS SAN is our domain (what the peer checks).
 */
export function createPeerTransport(peer: Peer, own: OwnTls, options: PeerTransportOptions = {}): DSTransport {
  return createDSTransport({
    baseUrl: peer.endpoint,
    ca: peer.ca,
    cert: typeof own.cert === "string" ? own.cert : own.cert.toString("utf8"),
    key: typeof own.key === "string" ? own.key : own.key.toString("utf8"),
    pingIntervalMs: options.pingIntervalMs ?? 30_000,
    ...(options.protocol !== undefined ? { protocol: options.protocol } : {}),
    ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
  });
}

/** Transports to peers by domain, made on first use and kept (one HTTP/2 connection per peer). */
export class PeerTransports {
  private readonly open = new Map<string, DSTransport>();

  constructor(
    readonly directory: PeerDirectory,
    private readonly own: OwnTls,
    private readonly options: PeerTransportOptions = {},
  ) {}

  /** The transport to `domain`, or undefined when it is not a configured peer. */
  get(domain: string): DSTransport | undefined {
    const peer = this.directory.get(domain);
    if (peer === undefined) return undefined;
    let t = this.open.get(peer.domain);
    if (t === undefined) {
      t = createPeerTransport(peer, this.own, this.options);
      this.open.set(peer.domain, t);
    }
    return t;
  }

  /** Drop (and close) a peer's connection, e.g. after a connection error. */
  reset(domain: string): void {
    const t = this.open.get(domain.toLowerCase());
    this.open.delete(domain.toLowerCase());
    t?.close();
  }

  close(): void {
    for (const t of this.open.values()) t.close();
    this.open.clear();
  }
}
