// serve's security-policy flags (src/cli/policy-flags.ts): flags win over the
// environment, absent ones keep the secure defaults, bad values are refused
// with the flag's name, and the relaxed settings are the ones serve warns of.
import { describe, expect, it } from "vitest";
import { ConfigError, parseServeArgs } from "../../src/cli/config.js";
import { parseByteSize, parseDuration } from "../../src/cli/policy-flags.js";
import { defaultPolicy, relaxedPolicy, resolvePolicy } from "../../src/ds/policy.js";

const base = ["--domain", "a.example", "--tls-cert", "c.pem", "--tls-key", "k.pem"];

describe("policy flags", () => {
  it("keeps the defaults when none is given, and they relax nothing", () => {
    const c = parseServeArgs(base, {});
    expect(c.policy).toEqual({});
    expect(c.outboxRetention).toEqual({});
    expect(resolvePolicy(c.policy)).toEqual(defaultPolicy);
    expect(relaxedPolicy(resolvePolicy(c.policy))).toEqual([]);
  });

  it("reads every flag, the environment beneath them", () => {
    const c = parseServeArgs(
      [
        ...base,
        "--local-clients", "unchecked",
        "--foreign-members", "allow",
        "--external-joins", "open",
        "--anonymous-key-packages",
        "--key-packages-per-requester", "10/m",
        "--key-packages-per-target", "3/h",
        "--max-credential-bytes", "32K",
        "--max-message-bytes", "2M",
        "--max-handshake-bytes", "16777216",
        "--max-groups-per-creator", "5",
        "--group-cache-bytes", "1G",
        "--send-replay-retention", "2d",
        "--outbox-max-age", "12h",
      ],
      { MIMI_DS_KEY_PACKAGES_PER_PEER: "100/s", MIMI_DS_MAX_GROUPS_PER_CREATOR: "99", MIMI_DS_OUTBOX_MAX_ENTRIES: "7" },
    );
    const p = resolvePolicy(c.policy);
    expect(p).toMatchObject({
      localClients: "unchecked",
      foreignMembers: "allow",
      externalJoins: "open",
      maxCredentialBytes: 32 * 1024,
      maxApplicationMessageBytes: 2 * 1024 * 1024,
      maxHandshakeMessageBytes: 16 * 1024 * 1024,
      maxGroupsPerCreator: 5,
      groupCacheBytes: 1024 ** 3,
      sendReplayRetentionMs: 2 * 86_400_000,
    });
    expect(p.keyPackages).toEqual({
      allowAnonymous: true,
      perRequester: { limit: 10, windowMs: 60_000 },
      perPeer: { limit: 100, windowMs: 1000 },
      perTarget: { limit: 3, windowMs: 3_600_000 },
      maxClockSkewMs: defaultPolicy.keyPackages.maxClockSkewMs,
    });
    expect(c.outboxRetention).toEqual({ maxAgeMs: 12 * 3_600_000, maxEntries: 7 });
    expect(relaxedPolicy(p)).toHaveLength(4);
  });

  it("refuses bad values naming the flag", () => {
    expect(() => parseServeArgs([...base, "--foreign-members", "maybe"], {})).toThrow(ConfigError);
    expect(() => parseServeArgs([...base, "--max-credential-bytes", "lots"], {})).toThrow(/--max-credential-bytes/);
    expect(() => parseServeArgs([...base, "--key-packages-per-target", "3"], {})).toThrow(/--key-packages-per-target/);
    expect(() => parseServeArgs([...base, "--outbox-max-age", "soon"], {})).toThrow(/--outbox-max-age/);
    expect(() => resolvePolicy({ maxGroupsPerCreator: -1 })).toThrow(RangeError);
    expect(parseByteSize("8M")).toBe(8 * 1024 * 1024);
    expect(parseDuration("250ms")).toBe(250);
  });
});
