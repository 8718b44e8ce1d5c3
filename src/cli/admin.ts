// Operator commands against a running DS: `hub-info` (what group creators put
// into external_senders) and `propose-removal` / `propose-addition` (DS-initiated
// proposals over AdminService, with the operator's client certificate).
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import { createDSTransport } from "../client/transport.js";
import { ConfigError } from "./config.js";

export const adminUsage = `usage:
  mimi-ds hub-info --endpoint URL --ca FILE [--suite N]
  mimi-ds propose-removal --endpoint URL --ca FILE --cert FILE --key FILE --group GROUP_ID --client CLIENT_ID
  mimi-ds propose-addition --endpoint URL --ca FILE --cert FILE --key FILE --group GROUP_ID --key-package FILE
GROUP_ID is the group id as text (e.g. abc@example.com) or base64url prefixed with "b64:".`;

const groupIdArg = (g: string): Uint8Array => (g.startsWith("b64:") ? Buffer.from(g.slice(4), "base64url") : new TextEncoder().encode(g));

export async function adminCommand(command: string, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      endpoint: { type: "string" },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      suite: { type: "string" },
      group: { type: "string" },
      client: { type: "string" },
      "key-package": { type: "string" },
    },
  });
  if (values.endpoint === undefined || values.ca === undefined) throw new ConfigError(`--endpoint and --ca are required\n${adminUsage}`);
  const ca = await readFile(values.ca);
  const mtls = values.cert !== undefined && values.key !== undefined ? { cert: await readFile(values.cert), key: await readFile(values.key) } : {};
  const transport = createDSTransport({ baseUrl: values.endpoint, ca, ...mtls });
  try {
    if (command === "hub-info") {
      const info = await createClient(HubService, transport).hubInfo({ cipherSuite: Number(values.suite ?? 1) });
      console.log(
        JSON.stringify(
          {
            domain: info.domain,
            externalSender: Buffer.from(info.externalSender).toString("base64"),
            fanoutSignatureKey: Buffer.from(info.fanoutSignatureKey).toString("base64"),
            protocolVersions: info.protocolVersions,
          },
          null,
          2,
        ),
      );
      return 0;
    }
    if (values.group === undefined) throw new ConfigError(`--group is required\n${adminUsage}`);
    const admin = createClient(AdminService, transport);
    const groupId = groupIdArg(values.group);
    if (command === "propose-removal") {
      if (values.client === undefined) throw new ConfigError(`--client is required\n${adminUsage}`);
      const res = await admin.proposeRemoval({ groupId, clientId: values.client });
      console.log(Buffer.from(res.proposalRef).toString("hex"));
      return 0;
    }
    if (values["key-package"] === undefined) throw new ConfigError(`--key-package is required\n${adminUsage}`);
    const res = await admin.proposeAddition({ groupId, keyPackage: await readFile(values["key-package"]) });
    console.log(Buffer.from(res.proposalRef).toString("hex"));
    return 0;
  } finally {
    transport.close();
  }
}
