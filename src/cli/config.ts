// `serve` configuration from flags, then environment, then defaults; and the
// helpers every command uses to turn a bad flag or file into one line that
// names the flag (exit 2).
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parseRateRule, type RateLimits, type RateRule } from "../ds/rate-limit.js";

export interface ServeConfig {
  readonly domain: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** A SQLite path or a mongodb:// URI. */
  readonly store: string;
  readonly tlsCert: string;
  readonly tlsKey: string;
  /** CA that verifies peer DSs' client certificates. */
  readonly tlsCa?: string;
  readonly logLevel: string;
  /** DSRequest rate limits ("N/s", "N/m", "N/h"); absent = unlimited. */
  readonly rateLimits: RateLimits;
  /** Peer DSs (JSON file, docs/federation.md). */
  readonly peers?: string;
  /** The key file that issues and verifies this domain's FanoutAuthTokens. */
  readonly fanoutTokenKey: string;
  /** Fanout accepted from each hub per window. */
  readonly fanoutRateLimit?: RateRule;
  /** Plain-HTTP listener for /metrics, /healthz, /readyz; absent = none. */
  readonly metricsListen?: { readonly host: string; readonly port: number };
  /** Start with an empty database although this data dir had one (start-up integrity). */
  readonly allowEmptyDatabase: boolean;
  /** Make missing key files beside an existing database (start-up integrity). */
  readonly allowNewKeys: boolean;
  /** Skip SQLite's quick_check at start (very large files). */
  readonly skipQuickCheck: boolean;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export const serveUsage = `usage: mimi-ds serve [options]
  --domain D        DS domain this server speaks for          (MIMI_DS_DOMAIN, required)
  --listen H:P      address to listen on                      (MIMI_DS_LISTEN, default 127.0.0.1:8443)
  --data-dir DIR    data directory                            (MIMI_DS_DATA_DIR, default ./data)
  --store URI       SQLite path or mongodb:// URI             (MIMI_DS_STORE, default <data-dir>/ds.sqlite)
  --tls-cert FILE   server certificate chain (PEM)            (MIMI_DS_TLS_CERT, required)
  --tls-key FILE    server private key (PEM)                  (MIMI_DS_TLS_KEY, required)
  --tls-ca FILE     CA of this DS's own domain (PEM): client   (MIMI_DS_TLS_CA, default none)
                    certificates it issued for --domain may use AdminService
                    (operator commands). Never a peer's CA: peers' CAs go in
                    the peers file, and only name their own domains.
  --log-level L     trace|debug|info|warn|error|fatal|silent  (MIMI_DS_LOG_LEVEL, default info)
  --rate-limit-client R   DSRequests per client, e.g. 20/s      (MIMI_DS_RATE_LIMIT_CLIENT, default none)
  --rate-limit-group R    DSRequests per group                  (MIMI_DS_RATE_LIMIT_GROUP, default none)
  --rate-limit-domain R   DSRequests per peer DS domain         (MIMI_DS_RATE_LIMIT_DOMAIN, default none)
  --peers FILE            peer DSs (docs/federation.md)         (MIMI_DS_PEERS, default none)
  --fanout-token-key FILE FanoutAuthToken keys, shared by all instances (MIMI_DS_FANOUT_TOKEN_KEY,
                          default <data-dir>/fanout-token-key.json)
  --fanout-rate-limit R   DSFanoutRequests accepted per hub     (MIMI_DS_FANOUT_RATE_LIMIT, default none)
  --metrics-listen H:P    plain-HTTP /metrics, /healthz, /readyz (MIMI_DS_METRICS_LISTEN, default off;
                          keep it on loopback or a private network: docs/operations.md)
  --allow-empty-database  start with an empty database although this data dir had one
  --allow-new-keys        make missing key files although the database exists
  --skip-quick-check      do not run SQLite's quick_check at start
Every start-up problem is one line naming the flag to fix, and exit status 2.`;

const logLevels = new Set(["trace", "debug", "info", "warn", "error", "fatal", "silent"]);

export function parseServeArgs(args: readonly string[], env: NodeJS.ProcessEnv): ServeConfig {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        domain: { type: "string" },
        listen: { type: "string" },
        "data-dir": { type: "string" },
        store: { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-ca": { type: "string" },
        "log-level": { type: "string" },
        "rate-limit-client": { type: "string" },
        "rate-limit-group": { type: "string" },
        "rate-limit-domain": { type: "string" },
        peers: { type: "string" },
        "fanout-token-key": { type: "string" },
        "fanout-rate-limit": { type: "string" },
        "metrics-listen": { type: "string" },
        "allow-empty-database": { type: "boolean" },
        "allow-new-keys": { type: "boolean" },
        "skip-quick-check": { type: "boolean" },
      },
    }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const pick = (flag: string | undefined, name: string): string | undefined => {
    const v = flag ?? env[name];
    return v === undefined || v === "" ? undefined : v;
  };
  const domain = pick(values.domain, "MIMI_DS_DOMAIN");
  if (domain === undefined) throw new ConfigError("--domain (or MIMI_DS_DOMAIN) is required");
  const { host, port } = parseListen(pick(values.listen, "MIMI_DS_LISTEN") ?? "127.0.0.1:8443");
  const metricsText = pick(values["metrics-listen"], "MIMI_DS_METRICS_LISTEN");
  const metricsListen = metricsText !== undefined ? parseListen(metricsText, "--metrics-listen") : undefined;
  const dataDir = resolve(pick(values["data-dir"], "MIMI_DS_DATA_DIR") ?? "data");
  const store = pick(values.store, "MIMI_DS_STORE") ?? join(dataDir, "ds.sqlite");
  const tlsCert = pick(values["tls-cert"], "MIMI_DS_TLS_CERT");
  const tlsKey = pick(values["tls-key"], "MIMI_DS_TLS_KEY");
  // Plain-text serving is not offered: peers and clients authenticate over TLS.
  if (tlsCert === undefined || tlsKey === undefined) {
    throw new ConfigError("--tls-cert and --tls-key (or MIMI_DS_TLS_CERT/KEY) are required; `dev-certs` makes some");
  }
  const tlsCa = pick(values["tls-ca"], "MIMI_DS_TLS_CA");
  const logLevel = pick(values["log-level"], "MIMI_DS_LOG_LEVEL") ?? "info";
  if (!logLevels.has(logLevel)) throw new ConfigError(`unknown log level: ${logLevel}`);
  const rate = (flag: string | undefined, name: string): RateRule | undefined => {
    const v = pick(flag, name);
    if (v === undefined) return undefined;
    try {
      return parseRateRule(v);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  };
  const perClient = rate(values["rate-limit-client"], "MIMI_DS_RATE_LIMIT_CLIENT");
  const perGroup = rate(values["rate-limit-group"], "MIMI_DS_RATE_LIMIT_GROUP");
  const perDomain = rate(values["rate-limit-domain"], "MIMI_DS_RATE_LIMIT_DOMAIN");
  const rateLimits: RateLimits = {
    ...(perClient !== undefined ? { perClient } : {}),
    ...(perGroup !== undefined ? { perGroup } : {}),
    ...(perDomain !== undefined ? { perDomain } : {}),
  };
  const peers = pick(values.peers, "MIMI_DS_PEERS");
  const fanoutTokenKey = pick(values["fanout-token-key"], "MIMI_DS_FANOUT_TOKEN_KEY") ?? join(dataDir, "fanout-token-key.json");
  const fanoutRateLimit = rate(values["fanout-rate-limit"], "MIMI_DS_FANOUT_RATE_LIMIT");
  return {
    domain,
    host,
    port,
    dataDir,
    store,
    tlsCert,
    tlsKey,
    ...(tlsCa !== undefined ? { tlsCa } : {}),
    logLevel,
    rateLimits,
    ...(peers !== undefined ? { peers: resolve(peers) } : {}),
    fanoutTokenKey,
    ...(fanoutRateLimit !== undefined ? { fanoutRateLimit } : {}),
    ...(metricsListen !== undefined ? { metricsListen } : {}),
    allowEmptyDatabase: values["allow-empty-database"] === true,
    allowNewKeys: values["allow-new-keys"] === true,
    skipQuickCheck: values["skip-quick-check"] === true,
  };
}

/** "host:port", "[v6]:port" or ":port" (all interfaces). */
export function parseListen(listen: string, flag = "--listen"): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${flag} wants host:port, got ${JSON.stringify(listen)}`);
  const host = m[1] ?? (m[2] === "" ? "0.0.0.0" : m[2]!);
  return { host, port };
}

/** What an errno means to an operator, in a few words. */
export function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case "ENOENT":
      return "no such file or directory";
    case "EACCES":
    case "EPERM":
      return `permission denied (running as uid ${process.getuid?.() ?? "?"})`;
    case "EISDIR":
      return "is a directory, not a file";
    case "ENOTDIR":
      return "a part of the path is not a directory";
    case "EROFS":
      return "read-only file system";
    case "ENOSPC":
      return "no space left on the device";
    default:
      return e.message ?? String(err);
  }
}

/** A file named by a flag, or a ConfigError naming the flag. */
export async function readFlagFile(flag: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new ConfigError(`${flag} ${path}: cannot read it: ${errnoText(err)}`);
  }
}

/** "0", "90s", "10m", "24h", "7d" (or plain milliseconds) -> milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (m === null) throw new ConfigError(`${flag} wants a duration such as 0, 90s, 10m, 24h or 7d, got ${JSON.stringify(text)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? "ms") as "ms" | "s" | "m" | "h" | "d"];
  return Number(m[1]) * unit;
}
