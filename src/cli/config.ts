// `serve` configuration from flags, then environment, then defaults.
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
  --tls-ca FILE     CA for peer DS client certificates (PEM)  (MIMI_DS_TLS_CA)
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
${policyUsage}${hardeningUsage}`;

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
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`--listen wants host:port, got ${JSON.stringify(listen)}`);
  const host = m[1] ?? (m[2] === "" ? "0.0.0.0" : m[2]!);
  return { host, port };
}
