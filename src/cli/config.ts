// `serve` configuration from flags, then environment, then defaults; and the
// helpers every command uses to turn a bad flag or file into one line that
// names the flag (exit 2).
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { CLIENT_POLICIES, type ClientPolicy } from "../ds/client-policy.js";
import { parseRateRule, type RateLimits, type RateRule } from "../ds/rate-limit.js";
import { CorsConfigError, parseCorsOrigin } from "../server/cors.js";
import { checkedMaxRequestBytes, defaultMaxRequestBytes, RequestLimitError } from "../server/limits.js";
import type { PolicyOverrides } from "../ds/policy.js";
import type { OutboxRetention } from "../delivery/outbox-purge.js";
import { parseOutboxFlags, parsePolicyFlags, policyArgOptions, policyUsage } from "./policy-flags.js";
import { hardeningArgOptions, hardeningUsage, HardeningConfigError, parseHardening, type HardeningConfig } from "./hardening-config.js";

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
  /** Parsed groups kept in memory. */
  readonly maxCachedGroups?: number;
  /** A full snapshot after this many logged commits. */
  readonly snapshotInterval?: number;
  /** Browser origins allowed over CORS (none by default). */
  readonly corsOrigins: readonly string[];
  /** Largest request (DS bytes) accepted; larger ones get too_large. */
  readonly maxRequestBytes: number;
  /** "mimi" (draft -05, default) or "rfc9420" (also standard MLS clients; docs/interop.md). */
  readonly clientPolicy: ClientPolicy;
  /** The hub's security policy overrides (src/cli/policy-flags.ts); absent fields keep the defaults. */
  readonly policy: PolicyOverrides;
  /** Outbox retention overrides (src/delivery/outbox-purge.ts). */
  readonly outboxRetention: Partial<OutboxRetention>;
  /** Registration, quotas, connection limits, purge (hardening-config.ts). */
  readonly hardening: HardeningConfig;
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
  --max-cached-groups N   parsed groups kept in memory          (MIMI_DS_MAX_CACHED_GROUPS, default 1000)
  --snapshot-interval N   a full group snapshot every N commits (MIMI_DS_SNAPSHOT_INTERVAL, default 64)
  --cors-origin O         browser origin allowed to call, e.g. https://app.example.com; repeatable,
                          '*' for any (MIMI_DS_CORS_ORIGINS, comma-separated; default none)
  --max-request-bytes N   largest request accepted, e.g. 8MiB; larger: too_large
                          (MIMI_DS_MAX_REQUEST_BYTES, default and maximum 16MiB)
  --client-policy P       mimi | rfc9420: rfc9420 also serves standard MLS clients without
                          FanoutAuth tokens or signed requests (MIMI_DS_CLIENT_POLICY, default mimi;
                          docs/interop.md)
${policyUsage}${hardeningUsage}
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
        "max-cached-groups": { type: "string" },
        "snapshot-interval": { type: "string" },
        "cors-origin": { type: "string", multiple: true },
        "max-request-bytes": { type: "string" },
        "client-policy": { type: "string" },
        ...policyArgOptions,
        ...hardeningArgOptions,
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
  const count = (flag: string | undefined, name: string, option: string): number | undefined => {
    const v = pick(flag, name);
    if (v === undefined) return undefined;
    if (!/^[1-9][0-9]{0,8}$/.test(v)) throw new ConfigError(`--${option} wants a positive integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const maxCachedGroups = count(values["max-cached-groups"], "MIMI_DS_MAX_CACHED_GROUPS", "max-cached-groups");
  const snapshotInterval = count(values["snapshot-interval"], "MIMI_DS_SNAPSHOT_INTERVAL", "snapshot-interval");
  const corsOrigins = (values["cors-origin"] ?? pick(undefined, "MIMI_DS_CORS_ORIGINS")?.split(",") ?? [])
    .map((o) => o.trim())
    .filter((o) => o !== "");
  try {
    corsOrigins.forEach(parseCorsOrigin);
  } catch (err) {
    if (err instanceof CorsConfigError) throw new ConfigError(err.message);
    throw err;
  }
  const maxRequestText = pick(values["max-request-bytes"], "MIMI_DS_MAX_REQUEST_BYTES");
  const maxRequestBytes = maxRequestText === undefined ? defaultMaxRequestBytes : parseByteSize(maxRequestText);
  const clientPolicy = pick(values["client-policy"], "MIMI_DS_CLIENT_POLICY") ?? "mimi";
  if (!(CLIENT_POLICIES as readonly string[]).includes(clientPolicy)) throw new ConfigError(`--client-policy wants one of ${CLIENT_POLICIES.join(", ")}, got ${JSON.stringify(clientPolicy)}`);
  let policy: PolicyOverrides;
  let outboxRetention: Partial<OutboxRetention>;
  try {
    policy = parsePolicyFlags(values, env);
    outboxRetention = parseOutboxFlags(values, env);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  let hardening: HardeningConfig;
  try {
    hardening = parseHardening(values, env);
  } catch (err) {
    if (err instanceof HardeningConfigError) throw new ConfigError(err.message);
    throw err;
  }
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
    ...(maxCachedGroups !== undefined ? { maxCachedGroups } : {}),
    ...(snapshotInterval !== undefined ? { snapshotInterval } : {}),
    corsOrigins,
    maxRequestBytes,
    clientPolicy: clientPolicy as ClientPolicy,
    policy,
    outboxRetention,
    hardening: hardening.registrationKey !== undefined ? { ...hardening, registrationKey: resolve(hardening.registrationKey) } : hardening,
    ...(metricsListen !== undefined ? { metricsListen } : {}),
    allowEmptyDatabase: values["allow-empty-database"] === true,
    allowNewKeys: values["allow-new-keys"] === true,
    skipQuickCheck: values["skip-quick-check"] === true,
  };
}

/** "8388608", "8MiB", "512KiB" (binary units), checked against the server's range. */
export function parseByteSize(text: string): number {
  const m = /^(\d+)\s*(B|KiB|MiB)?$/.exec(text.trim());
  const unit = m?.[2] === "MiB" ? 1024 * 1024 : m?.[2] === "KiB" ? 1024 : 1;
  if (m === null) throw new ConfigError(`--max-request-bytes wants bytes, e.g. 8388608 or 8MiB, got ${JSON.stringify(text)}`);
  try {
    return checkedMaxRequestBytes(Number(m[1]) * unit);
  } catch (err) {
    if (err instanceof RequestLimitError) throw new ConfigError(err.message);
    throw err;
  }
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
