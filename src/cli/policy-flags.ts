// `serve` flags of the hub's security policy (src/ds/policy.ts,
// docs/security.md): each has an environment variable; an absent one keeps the
// secure default.
import type { ParseArgsConfig } from "node:util";
import { parseRateRule, type RateRule } from "../ds/rate-limit.js";
import type { PolicyOverrides } from "../ds/policy.js";
import type { OutboxRetention } from "../delivery/outbox-purge.js";

type Values = Record<string, string | boolean | readonly string[] | undefined>;

export const policyArgOptions = {
  "local-clients": { type: "string" },
  "foreign-members": { type: "string" },
  "external-joins": { type: "string" },
  "anonymous-key-packages": { type: "boolean" },
  "key-packages-per-requester": { type: "string" },
  "key-packages-per-peer": { type: "string" },
  "key-packages-per-target": { type: "string" },
  "max-credential-bytes": { type: "string" },
  "max-message-bytes": { type: "string" },
  "max-handshake-bytes": { type: "string" },
  "max-groups-per-creator": { type: "string" },
  "group-cache-bytes": { type: "string" },
  "send-replay-retention": { type: "string" },
  "outbox-max-age": { type: "string" },
  "outbox-max-entries": { type: "string" },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

export const policyUsage = `  security policy (docs/security.md; defaults are the secure ones):
  --local-clients registered|unchecked  leaves of this domain's clients need their registered key
                          and a FanoutAuthToken of this DS (MIMI_DS_LOCAL_CLIENTS, default registered)
  --foreign-members refuse|allow  members of domains that are not peers (MIMI_DS_FOREIGN_MEMBERS, default refuse)
  --external-joins resync|open    external commits in groups without an external_join_policy
                          (MIMI_DS_EXTERNAL_JOINS, default resync: a member replacing its own leaf)
  --anonymous-key-packages        serve key_packages to anyone (MIMI_DS_ANONYMOUS_KEY_PACKAGES=1, default off)
  --key-packages-per-requester R  per local client (MIMI_DS_KEY_PACKAGES_PER_REQUESTER, default 120/h)
  --key-packages-per-peer R       per peer DS (MIMI_DS_KEY_PACKAGES_PER_PEER, default 6000/h)
  --key-packages-per-target R     per client handed out (MIMI_DS_KEY_PACKAGES_PER_TARGET, default 30/h)
  --max-credential-bytes N        per leaf credential (MIMI_DS_MAX_CREDENTIAL_BYTES, default 16K)
  --max-message-bytes N           per application message (MIMI_DS_MAX_MESSAGE_BYTES, default 1M)
  --max-handshake-bytes N         per commit, proposal, Welcome, GroupInfo+tree (MIMI_DS_MAX_HANDSHAKE_BYTES, default 8M)
  --max-groups-per-creator N      live groups one client created (MIMI_DS_MAX_GROUPS_PER_CREATOR, default 1000)
  --group-cache-bytes N           parsed-group cache budget (MIMI_DS_GROUP_CACHE_BYTES, default 512M)
  --send-replay-retention D       longest a send_message replay record lives, e.g. 7d
                          (MIMI_DS_SEND_REPLAY_RETENTION, default 7d)
  --outbox-max-age D              fanout for a domain that does not fetch it is dropped after this
                          (MIMI_DS_OUTBOX_MAX_AGE, default 7d)
  --outbox-max-entries N          and beyond this many per destination (MIMI_DS_OUTBOX_MAX_ENTRIES, default 1000000)`;

export class PolicyFlagError extends Error {
  override readonly name = "PolicyFlagError";
}

/** "123", "16K", "8M", "1G" (binary multiples). */
export function parseByteSize(text: string): number {
  const m = /^(\d+)([KMG]?)i?B?$/i.exec(text.trim());
  if (m === null) throw new PolicyFlagError(`a size is N, NK, NM or NG, not ${JSON.stringify(text)}`);
  const mult = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G"];
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) throw new PolicyFlagError(`${text} is too large`);
  return n;
}

/** "250ms", "30s", "15m", "12h", "7d", or milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (m === null) throw new PolicyFlagError(`a duration is N (ms) or Nms, Ns, Nm, Nh, Nd, not ${JSON.stringify(text)}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? "ms") as "ms" | "s" | "m" | "h" | "d"];
}

function parseCount(text: string): number {
  if (!/^\d+$/.test(text.trim())) throw new PolicyFlagError(`want a whole number, not ${JSON.stringify(text)}`);
  return Number(text);
}

function oneOf<T extends string>(text: string, flag: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text)) throw new PolicyFlagError(`--${flag} is one of ${allowed.join(", ")}, not ${JSON.stringify(text)}`);
  return text as T;
}

const picker = (values: Values, env: NodeJS.ProcessEnv) => (flag: keyof typeof policyArgOptions): string | undefined => {
  const v = values[flag];
  if (typeof v === "string" && v !== "") return v;
  const e = env[`MIMI_DS_${flag.toUpperCase().replaceAll("-", "_")}`];
  return e === undefined || e === "" ? undefined : e;
};

const wrap = <T>(flag: string, f: () => T): T => {
  try {
    return f();
  } catch (err) {
    throw new PolicyFlagError(`--${flag}: ${(err as Error).message}`);
  }
};

/** Outbox retention overrides (src/delivery/outbox-purge.ts). */
export function parseOutboxFlags(values: Values, env: NodeJS.ProcessEnv): Partial<OutboxRetention> {
  const pick = picker(values, env);
  const age = pick("outbox-max-age");
  const entries = pick("outbox-max-entries");
  return {
    ...(age !== undefined ? { maxAgeMs: wrap("outbox-max-age", () => parseDuration(age)) } : {}),
    ...(entries !== undefined ? { maxEntries: wrap("outbox-max-entries", () => parseCount(entries)) } : {}),
  };
}

/** The policy overrides the flags and environment name (flags first). */
export function parsePolicyFlags(values: Values, env: NodeJS.ProcessEnv): PolicyOverrides {
  const pick = picker(values, env);
  const o: { -readonly [K in keyof PolicyOverrides]: PolicyOverrides[K] } = {};
  const kp: { -readonly [K in keyof NonNullable<PolicyOverrides["keyPackages"]>]?: NonNullable<PolicyOverrides["keyPackages"]>[K] } = {};
  const v = (flag: keyof typeof policyArgOptions) => pick(flag);
  if (v("local-clients") !== undefined) o.localClients = oneOf(v("local-clients")!, "local-clients", ["registered", "unchecked"] as const);
  if (v("foreign-members") !== undefined) o.foreignMembers = oneOf(v("foreign-members")!, "foreign-members", ["refuse", "allow"] as const);
  if (v("external-joins") !== undefined) o.externalJoins = oneOf(v("external-joins")!, "external-joins", ["resync", "open"] as const);
  const anon = values["anonymous-key-packages"] === true ? "1" : env.MIMI_DS_ANONYMOUS_KEY_PACKAGES;
  if (anon !== undefined && anon !== "") kp.allowAnonymous = anon === "1" || anon.toLowerCase() === "true";
  const rate = (flag: keyof typeof policyArgOptions): RateRule | undefined => (v(flag) === undefined ? undefined : wrap(flag, () => parseRateRule(v(flag)!)));
  const perRequester = rate("key-packages-per-requester");
  const perPeer = rate("key-packages-per-peer");
  const perTarget = rate("key-packages-per-target");
  if (perRequester !== undefined) kp.perRequester = perRequester;
  if (perPeer !== undefined) kp.perPeer = perPeer;
  if (perTarget !== undefined) kp.perTarget = perTarget;
  const size = (flag: keyof typeof policyArgOptions) => (v(flag) === undefined ? undefined : wrap(flag, () => parseByteSize(v(flag)!)));
  const cred = size("max-credential-bytes");
  const msg = size("max-message-bytes");
  const hs = size("max-handshake-bytes");
  const cache = size("group-cache-bytes");
  if (cred !== undefined) o.maxCredentialBytes = cred;
  if (msg !== undefined) o.maxApplicationMessageBytes = msg;
  if (hs !== undefined) o.maxHandshakeMessageBytes = hs;
  if (cache !== undefined) o.groupCacheBytes = cache;
  if (v("max-groups-per-creator") !== undefined) o.maxGroupsPerCreator = wrap("max-groups-per-creator", () => parseCount(v("max-groups-per-creator")!));
  if (v("send-replay-retention") !== undefined) o.sendReplayRetentionMs = wrap("send-replay-retention", () => parseDuration(v("send-replay-retention")!));
  if (Object.keys(kp).length > 0) o.keyPackages = kp;
  return o;
}
