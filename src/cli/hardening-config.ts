// `serve` flags of the limits against a hostile network (docs/security.md):
// registration, quotas, connection limits and the scheduled purge. Kept apart
// from config.ts so that the parse stays in one place; config.ts merges the
// options and the result into ServeConfig.hardening.
import { parseRateRule, type RateRule } from "../ds/rate-limit.js";

/** A bad flag value; config.ts reports it as a ConfigError. */
export class HardeningConfigError extends Error {
  override readonly name = "HardeningConfigError";
}
const ConfigError = HardeningConfigError;

export interface HardeningConfig {
  /** PEM file with the provider's Ed25519 registration issuer key(s). */
  readonly registrationKey?: string;
  /** Development mode: first use binds a client id (logged as a warning). */
  readonly openRegistration: boolean;
  readonly registrationRate?: RateRule;
  readonly maxKeyPackagesPerClient?: number;
  readonly maxReceiveStreamsPerClient?: number;
  readonly maxConcurrentStreams?: number;
  readonly maxStreamingCallsPerSession?: number;
  readonly idleTimeoutMs?: number;
  readonly headersTimeoutMs?: number;
  readonly requestBodyTimeoutMs?: number;
  readonly maxSessionMemoryMb?: number;
  /** How often expired history, KeyPackages, consumed refs and rate windows are purged. */
  readonly purgeIntervalMs: number;
}

export const DEFAULT_PURGE_INTERVAL_MS = 10 * 60_000;

export const hardeningArgOptions = {
  "registration-key": { type: "string" },
  "open-registration": { type: "boolean" },
  "registration-rate-limit": { type: "string" },
  "max-key-packages-per-client": { type: "string" },
  "max-receive-streams-per-client": { type: "string" },
  "max-concurrent-streams": { type: "string" },
  "max-streams-per-connection": { type: "string" },
  "idle-timeout": { type: "string" },
  "headers-timeout": { type: "string" },
  "request-body-timeout": { type: "string" },
  "max-session-memory": { type: "string" },
  "purge-interval": { type: "string" },
} as const;

export const hardeningUsage = `
  --registration-key FILE   provider's Ed25519 public key(s) (PEM) that sign RegistrationCredentials
                            (MIMI_DS_REGISTRATION_KEY; without it, and without --open-registration, nobody registers)
  --open-registration       DEVELOPMENT ONLY: bind a client id to the first key that registers it
                            (MIMI_DS_OPEN_REGISTRATION=1; logged as a warning; \`make run\` sets it)
  --registration-rate-limit R  open registrations (no credential) per remote address
                            (MIMI_DS_REGISTRATION_RATE_LIMIT, default 30/h)
  --max-key-packages-per-client N  KeyPackages one client keeps (MIMI_DS_MAX_KEY_PACKAGES_PER_CLIENT, default 500)
  --max-receive-streams-per-client N  open Receive streams per client, a newer one ends the oldest
                            (MIMI_DS_MAX_RECEIVE_STREAMS_PER_CLIENT, default 4)
  --max-concurrent-streams N  HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (MIMI_DS_MAX_CONCURRENT_STREAMS, default 100)
  --max-streams-per-connection N  open streaming calls per HTTP/2 connection (MIMI_DS_MAX_STREAMS_PER_CONNECTION, default 16)
  --idle-timeout D          close connections without calls after D (MIMI_DS_IDLE_TIMEOUT, default 120s)
  --headers-timeout D       HTTP/1.1 request headers within D (MIMI_DS_HEADERS_TIMEOUT, default 10s)
  --request-body-timeout D  a one-message request body within D (MIMI_DS_REQUEST_BODY_TIMEOUT, default 30s)
  --max-session-memory MB   per HTTP/2 connection (MIMI_DS_MAX_SESSION_MEMORY, default 10)
  --purge-interval D        purge expired data every D (MIMI_DS_PURGE_INTERVAL, default 10m)
  (D: a duration such as 500ms, 30s, 10m, 1h)`;

/** "500ms", "30s", "10m", "1h" or plain milliseconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(text.trim());
  const ms = m === null ? NaN : Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "ms") as "ms" | "s" | "m" | "h"];
  if (!(ms > 0) || !Number.isSafeInteger(ms)) throw new ConfigError(`${what} wants a positive duration such as 30s or 10m, got ${JSON.stringify(text)}`);
  return ms;
}

function parseCount(text: string, what: string): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(n > 0) || !Number.isSafeInteger(n)) throw new ConfigError(`${what} wants a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

type Values = { readonly [K in keyof typeof hardeningArgOptions]?: (typeof hardeningArgOptions)[K]["type"] extends "boolean" ? boolean : string };

export function parseHardening(values: Values, env: NodeJS.ProcessEnv): HardeningConfig {
  const pick = (flag: string | undefined, name: string): string | undefined => {
    const v = flag ?? env[name];
    return v === undefined || v === "" ? undefined : v;
  };
  const opt = <T>(flag: string | undefined, name: string, parse: (v: string, what: string) => T): T | undefined => {
    const v = pick(flag, name);
    return v === undefined ? undefined : parse(v, `--${name.slice("MIMI_DS_".length).toLowerCase().replaceAll("_", "-")}`);
  };
  const rate = (v: string, what: string): RateRule => {
    try {
      return parseRateRule(v);
    } catch (err) {
      throw new ConfigError(`${what}: ${(err as Error).message}`);
    }
  };
  const envOpen = env.MIMI_DS_OPEN_REGISTRATION;
  const openRegistration = values["open-registration"] === true || envOpen === "1" || envOpen === "true";
  const registrationKey = pick(values["registration-key"], "MIMI_DS_REGISTRATION_KEY");
  const registrationRate = opt(values["registration-rate-limit"], "MIMI_DS_REGISTRATION_RATE_LIMIT", rate);
  const maxKeyPackagesPerClient = opt(values["max-key-packages-per-client"], "MIMI_DS_MAX_KEY_PACKAGES_PER_CLIENT", parseCount);
  const maxReceiveStreamsPerClient = opt(values["max-receive-streams-per-client"], "MIMI_DS_MAX_RECEIVE_STREAMS_PER_CLIENT", parseCount);
  const maxConcurrentStreams = opt(values["max-concurrent-streams"], "MIMI_DS_MAX_CONCURRENT_STREAMS", parseCount);
  const maxStreamingCallsPerSession = opt(values["max-streams-per-connection"], "MIMI_DS_MAX_STREAMS_PER_CONNECTION", parseCount);
  const idleTimeoutMs = opt(values["idle-timeout"], "MIMI_DS_IDLE_TIMEOUT", parseDuration);
  const headersTimeoutMs = opt(values["headers-timeout"], "MIMI_DS_HEADERS_TIMEOUT", parseDuration);
  const requestBodyTimeoutMs = opt(values["request-body-timeout"], "MIMI_DS_REQUEST_BODY_TIMEOUT", parseDuration);
  const maxSessionMemoryMb = opt(values["max-session-memory"], "MIMI_DS_MAX_SESSION_MEMORY", parseCount);
  const purgeIntervalMs = opt(values["purge-interval"], "MIMI_DS_PURGE_INTERVAL", parseDuration) ?? DEFAULT_PURGE_INTERVAL_MS;
  return {
    ...(registrationKey !== undefined ? { registrationKey } : {}),
    openRegistration,
    ...(registrationRate !== undefined ? { registrationRate } : {}),
    ...(maxKeyPackagesPerClient !== undefined ? { maxKeyPackagesPerClient } : {}),
    ...(maxReceiveStreamsPerClient !== undefined ? { maxReceiveStreamsPerClient } : {}),
    ...(maxConcurrentStreams !== undefined ? { maxConcurrentStreams } : {}),
    ...(maxStreamingCallsPerSession !== undefined ? { maxStreamingCallsPerSession } : {}),
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    ...(headersTimeoutMs !== undefined ? { headersTimeoutMs } : {}),
    ...(requestBodyTimeoutMs !== undefined ? { requestBodyTimeoutMs } : {}),
    ...(maxSessionMemoryMb !== undefined ? { maxSessionMemoryMb } : {}),
    purgeIntervalMs,
  };
}
