// The rest of `serve`'s start-up checks: TLS files (each named by its flag,
// parsed and matched before the server sees them), the errors of listening
// and of opening the store turned into one line naming the flag, and a fast
// failure for an unreachable MongoDB.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import { firstDnsSan } from "../server/context.js";
import { StoreError } from "../store/index.js";
import { ConfigError, readFlagFile } from "./config.js";
import { redactUri } from "./integrity.js";

export interface TlsFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca?: Buffer;
  /** Things worth a warning that do not stop the start (expiry, a name that does not fit). */
  readonly warnings: string[];
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** DER of every certificate in a PEM bundle (a block that does not parse is an error). */
export function certificatesOf(pem: Buffer, flag = "--tls-ca"): X509Certificate[] {
  const blocks = pem.toString("latin1").match(PEM_CERT) ?? [];
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new ConfigError(`${flag}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

export async function loadTls(o: { tlsCert: string; tlsKey: string; tlsCa?: string; domain: string }, now = Date.now()): Promise<TlsFiles> {
  const [cert, key, ca] = await Promise.all([
    readFlagFile("--tls-cert", o.tlsCert),
    readFlagFile("--tls-key", o.tlsKey),
    o.tlsCa !== undefined ? readFlagFile("--tls-ca", o.tlsCa) : Promise.resolve(undefined),
  ]);
  const chain = certificatesOf(cert, "--tls-cert");
  const leaf = chain[0];
  if (leaf === undefined) throw new ConfigError(`--tls-cert ${o.tlsCert}: no PEM certificate in it`);
  try {
    createPrivateKey(key);
  } catch (err) {
    const why = /passphrase|encrypted/i.test((err as Error).message) ? "it is encrypted (give an unencrypted key)" : (err as Error).message;
    throw new ConfigError(`--tls-key ${o.tlsKey}: not a private key: ${why}`);
  }
  if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new ConfigError(`--tls-key ${o.tlsKey} is not the key of --tls-cert ${o.tlsCert}`);
  if (ca !== undefined && certificatesOf(ca).length === 0) throw new ConfigError(`--tls-ca ${o.tlsCa}: no PEM certificate in it`);
  try {
    createSecureContext({ cert, key, ...(ca !== undefined ? { ca } : {}) });
  } catch (err) {
    throw new ConfigError(`--tls-cert/--tls-key: OpenSSL refuses them: ${(err as Error).message}`);
  }
  const warnings: string[] = [];
  if (Date.parse(leaf.validTo) < now) warnings.push(`--tls-cert expired on ${leaf.validTo}: clients and peers will refuse it`);
  else if (Date.parse(leaf.validFrom) > now) warnings.push(`--tls-cert is valid only from ${leaf.validFrom}`);
  const named = firstDnsSan(leaf.subjectAltName ?? "");
  if (named !== o.domain) {
    warnings.push(
      `the first DNS name of --tls-cert is ${named ?? "(none)"}, not --domain ${o.domain}: peers take a DS's domain from the first DNS subjectAltName of its client certificate, so they will not recognise this DS (docs/federation.md)`,
    );
  }
  return { cert, key, ...(ca !== undefined ? { ca } : {}), warnings };
}

/** One line for a failed listen on `flag` (EADDRINUSE, EACCES, ...). */
export function listenError(err: unknown, flag: string, host: string, port: number): ConfigError | undefined {
  const code = (err as NodeJS.ErrnoException).code;
  const at = `${flag} ${host.includes(":") ? `[${host}]` : host}:${port}`;
  switch (code) {
    case "EADDRINUSE":
      return new ConfigError(`${at}: the address is already in use (another process listens there)`);
    case "EACCES":
      return new ConfigError(`${at}: permission denied (ports below 1024 need privileges; use a higher port or CAP_NET_BIND_SERVICE)`);
    case "EADDRNOTAVAIL":
      return new ConfigError(`${at}: not an address of this machine`);
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new ConfigError(`${at}: the host name does not resolve`);
    default:
      return undefined;
  }
}

/** How long opening a MongoDB store waits for a server before giving up (unless the URI says). */
export const MONGO_SELECTION_TIMEOUT_MS = 5000;

/** The URI with serverSelectionTimeoutMS set unless the operator set it. */
export function mongoUriWithTimeout(uri: string, ms = MONGO_SELECTION_TIMEOUT_MS): string {
  if (/[?&]serverSelectionTimeoutMS=/i.test(uri)) return uri;
  const [base, query] = uri.split("?", 2) as [string, string | undefined];
  // mongodb://host (no path) needs the "/" before the options.
  const withSlash = /^mongodb(\+srv)?:\/\/[^/]+$/i.test(base) ? `${base}/` : base;
  return `${withSlash}?${query !== undefined && query !== "" ? `${query}&` : ""}serverSelectionTimeoutMS=${ms}`;
}

/** One line for a store that does not open. */
export function storeOpenError(err: unknown, store: string): ConfigError {
  const shown = redactUri(store);
  const message = (err as Error).message ?? String(err);
  if (/^mongodb(\+srv)?:\/\//i.test(store)) {
    if (/server selection|ECONNREFUSED|ENOTFOUND|timed out/i.test(message)) {
      const ms = Number(/[?&]serverSelectionTimeoutMS=(\d+)/i.exec(mongoUriWithTimeout(store))?.[1]);
      return new ConfigError(
        `--store ${shown}: MongoDB does not answer within ${ms / 1000} s (${message.replace(/^mongodb: /, "").split("\n")[0]}): is it running, and a replica set? (serverSelectionTimeoutMS in the URI sets the wait)`,
      );
    }
    return new ConfigError(`--store ${shown}: ${message.split("\n")[0]}`);
  }
  if (err instanceof StoreError) return new ConfigError(`--store ${shown}: ${message.replace(/^sqlite: /, "")}`);
  return new ConfigError(`--store ${shown}: ${message}`);
}
