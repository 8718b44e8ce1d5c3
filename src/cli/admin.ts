// Operator commands against a running DS: `hub-info` (what group creators put
// into external_senders, and the fanout key peers configure),
// `propose-removal` / `propose-addition` (DS-initiated proposals), and the
// DS's own clients: `revoke-tokens`, `block` / `unblock` / `blocks`. All but
// hub-info go to AdminService with the operator's client certificate (issued
// for this DS's domain by the CA given to `serve --tls-ca`).
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createDSTransport, type DSTransport } from "../client/transport.js";
import { ConfigError, parseDuration, readFlagFile } from "./config.js";
import { describeRpcError, RemoteError } from "./rpc-errors.js";

const remote = "--endpoint URL --ca FILE";
const operator = `${remote} --cert FILE --key FILE`;
export const adminUsage = `usage (operator commands against a running DS):
  mimi-ds hub-info ${remote} [--suite N]
  mimi-ds propose-removal ${operator} --group GROUP_ID --client CLIENT_ID
  mimi-ds propose-addition ${operator} --group GROUP_ID --key-package FILE
  mimi-ds revoke-tokens ${operator} --client CLIENT_ID [--grace DURATION]
  mimi-ds block ${operator} --client CLIENT_ID [--domain D ...] [--group GROUP_ID ...]
  mimi-ds unblock ${operator} --client CLIENT_ID [--domain D ...] [--group GROUP_ID ...]
  mimi-ds blocks ${operator} --client CLIENT_ID
--ca is the CA that issued the DS's server certificate; --cert/--key a client
certificate for the DS's own domain from the CA given to \`serve --tls-ca\`.
GROUP_ID is the group id as text (e.g. abc@example.com) or base64url prefixed
with "b64:". DURATION: 0, 90s, 10m, 24h or 7d (default 0: at once).`;

export const adminCommands = ["hub-info", "propose-removal", "propose-addition", "revoke-tokens", "block", "unblock", "blocks"] as const;
export type AdminCommand = (typeof adminCommands)[number];

const groupIdArg = (g: string): Uint8Array => (g.startsWith("b64:") ? Buffer.from(g.slice(4), "base64url") : new TextEncoder().encode(g));
const groupIdText = (g: Uint8Array): string => {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(g);
  return /^[\x21-\x7e]+$/.test(text) ? text : `b64:${Buffer.from(g).toString("base64url")}`;
};

export async function adminCommand(command: AdminCommand, args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        endpoint: { type: "string" },
        ca: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        suite: { type: "string" },
        group: { type: "string", multiple: true },
        client: { type: "string" },
        "key-package": { type: "string" },
        domain: { type: "string", multiple: true },
        grace: { type: "string" },
      },
    }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (mimi-ds help admin)`);
  }
  const need = (name: string, v: string | undefined): string => {
    if (v === undefined || v === "") throw new ConfigError(`${command} needs --${name} (mimi-ds help admin)`);
    return v;
  };
  const endpoint = need("endpoint", values.endpoint);
  const ca = await readFlagFile("--ca", need("ca", values.ca));
  if (command !== "hub-info") {
    need("cert", values.cert);
    need("key", values.key);
  }
  const mtls =
    values.cert !== undefined && values.key !== undefined
      ? { cert: await readFlagFile("--cert", values.cert), key: await readFlagFile("--key", values.key) }
      : {};
  let transport: DSTransport;
  try {
    transport = createDSTransport({ baseUrl: endpoint, ca, ...mtls, defaultTimeoutMs: 15_000 });
  } catch (err) {
    throw new ConfigError(`--endpoint: ${(err as Error).message}`);
  }
  // Everything the command needs from its flags is checked before the first call.
  const call = await planCall(command, values, need);
  try {
    const out = await call(transport).catch((err: unknown) => {
      throw new RemoteError(describeRpcError(err, endpoint));
    });
    console.log(out);
    return 0;
  } finally {
    transport.close();
  }
}

type Values = {
  suite?: string | undefined;
  group?: string[] | undefined;
  client?: string | undefined;
  "key-package"?: string | undefined;
  domain?: string[] | undefined;
  grace?: string | undefined;
};

async function planCall(command: AdminCommand, v: Values, need: (name: string, v: string | undefined) => string): Promise<(t: DSTransport) => Promise<string>> {
  const json = (x: unknown): string => JSON.stringify(x, (_k, val: unknown) => (typeof val === "bigint" ? Number(val) : val), 2);
  switch (command) {
    case "hub-info": {
      const cipherSuite = Number(v.suite ?? 1);
      if (!Number.isInteger(cipherSuite) || cipherSuite < 1 || cipherSuite > 0xffff) throw new ConfigError(`--suite wants an MLS ciphersuite number, got ${JSON.stringify(v.suite)}`);
      return async (t) => {
        const info = await createClient(HubService, t).hubInfo({ cipherSuite });
        return json({
          domain: info.domain,
          serverVersion: info.serverVersion,
          externalSender: Buffer.from(info.externalSender).toString("base64"),
          fanoutSignatureKey: Buffer.from(info.fanoutSignatureKey).toString("base64"),
          protocolVersions: info.protocolVersions,
        });
      };
    }
    case "propose-removal": {
      const groupId = groupIdArg(need("group", v.group?.[0]));
      const clientId = need("client", v.client);
      return async (t) => Buffer.from((await createClient(AdminService, t).proposeRemoval({ groupId, clientId })).proposalRef).toString("hex");
    }
    case "propose-addition": {
      const groupId = groupIdArg(need("group", v.group?.[0]));
      const keyPackage = await readFlagFile("--key-package", need("key-package", v["key-package"]));
      return async (t) => Buffer.from((await createClient(AdminService, t).proposeAddition({ groupId, keyPackage })).proposalRef).toString("hex");
    }
    case "revoke-tokens": {
      const clientId = need("client", v.client);
      const gracePeriodMs = BigInt(v.grace === undefined ? 0 : parseDuration("--grace", v.grace));
      return async (t) => {
        const r = await createClient(AdminService, t).revokeFanoutTokens({ clientId, gracePeriodMs });
        return json({
          client: clientId,
          tokensNotBefore: new Date(Number(r.tokensNotBeforeMs)).toISOString(),
          revokedTokensValidUntil: new Date(Number(r.graceUntilMs)).toISOString(),
        });
      };
    }
    case "block":
    case "unblock":
    case "blocks": {
      const clientId = need("client", v.client);
      const domains = v.domain ?? [];
      const groups = (v.group ?? []).map(groupIdArg);
      if (command === "blocks" && (domains.length > 0 || groups.length > 0)) throw new ConfigError("blocks only reads: use block or unblock to change them");
      if (command !== "blocks" && domains.length === 0 && groups.length === 0) throw new ConfigError(`${command} needs at least one --domain or --group`);
      const change =
        command === "block" ? { blockDomains: domains, blockGroups: groups } : command === "unblock" ? { unblockDomains: domains, unblockGroups: groups } : {};
      return async (t) => {
        const r = await createClient(AdminService, t).updateBlocks({ clientId, ...change });
        return json({ client: clientId, blockedDomains: r.blockedDomains, blockedGroups: r.blockedGroups.map(groupIdText) });
      };
    }
  }
}
