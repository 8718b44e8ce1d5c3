// Several hub instances on one MongoDB (run when MONGODB_URI names a replica
// set): clients connected to different instances share one group; concurrent
// commits on different instances -> exactly one accepted; a Receive stream on
// one instance is woken by writes made on the other.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDSTransport, DSClient, DSRequestError, MimiMember, type DSTransport } from "../../src/client/index.js";
import { HubIdentity } from "../../src/ds/hub-identity.js";
import { withDatabase } from "../../src/store/mongo/values.js";
import { DSErrorCode, decodeWith, externalSenderCodec } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";
import { E2EClient } from "./harness.js";

const uri = process.env.MONGODB_URI;
const DOMAIN = "hub.example";

/** The URI with a fresh database name, so runs do not see each other (multi-host and SRV URIs too: no new URL()). */
function freshDatabase(base: string): string {
  return withDatabase(base, `mimi_e2e_${randomBytes(4).toString("hex")}`);
}

describe.skipIf(uri === undefined)("two hub instances on one MongoDB", () => {
  let ca: DevCa;
  let dataDir: string;
  const servers: ServeProcess[] = [];
  const transports: DSTransport[] = [];
  const clients: E2EClient[] = [];

  beforeAll(async () => {
    ca = await makeDevCa([DOMAIN]);
    dataDir = await mkdtemp(join(tmpdir(), "mimi-ds-mongo-"));
    await HubIdentity.open(DOMAIN, join(dataDir, "hub-keys.json")); // shared by both instances
    const store = freshDatabase(uri!);
    for (let i = 0; i < 2; i++) servers.push(await spawnServe({ domain: DOMAIN, dataDir, certsDir: ca.dir, args: ["--store", store] }));
  });
  afterAll(async () => {
    for (const c of clients) await c.stop();
    for (const t of transports) t.close();
    for (const s of servers) await s.stop();
    await ca?.cleanup();
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  async function client(name: string, instance: number): Promise<E2EClient> {
    const t = createDSTransport({ baseUrl: servers[instance]!.url, ca: ca.ca });
    transports.push(t);
    const member = await MimiMember.create({ clientId: `mimi://${DOMAIN}/u/${name}/d/1`, hub: new DSClient(t), local: t });
    await member.register();
    await member.publishKeyPackages(2);
    const c = new E2EClient(member);
    c.startInbox();
    clients.push(c);
    return c;
  }

  it("serves one group from both instances", async () => {
    const alice = await client("alice", 0);
    const bob = await client("bob", 1);
    const carol = await client("carol", 1);
    const info = await alice.member.hub!.hub.hubInfo({ cipherSuite: 1 });
    await alice.member.createGroup(decodeWith(externalSenderCodec, info.externalSender, "ExternalSender"));
    // KeyPackages published on instance 1 are fetched on instance 0; the Welcomes
    // written on 0 wake the Receive streams held by 1.
    await alice.member.addClients([bob.id, carol.id]);
    expect((await bob.process(1))[0]!.kind).toBe("joined");
    expect((await carol.process(1))[0]!.kind).toBe("joined");

    await bob.member.send("from instance 1");
    expect((await alice.process(1))[0]).toMatchObject({ text: "from instance 1" });

    // Concurrent commits for one epoch arriving at different instances: exactly one wins.
    const results = await Promise.allSettled([alice.member.update(), bob.member.update(), carol.member.update()]);
    const accepted = results.filter((r) => r.status === "fulfilled").length;
    const refused = results.filter((r) => r.status === "rejected" && (r.reason as DSRequestError).code === DSErrorCode.wrong_epoch).length;
    expect({ accepted, refused }).toEqual({ accepted: 1, refused: 2 });
  });
});
