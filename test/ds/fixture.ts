// A hub in this process for DS tests: SQLite store in a temp dir, the real
// dispatcher and server over TLS, and helpers to make members and drain queues.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDSTransport, DSClient, MimiMember, type DSTransport, type MimiMemberOptions } from "../../src/client/index.js";
import { groupKey } from "../../src/ds/groups.js";
import { createClientService, FanoutTokenKeys, localClientDirectory } from "../../src/delivery/index.js";
import { createDeliveryService, type DeliveryService, type DeliveryServiceOptions } from "../../src/ds/service.js";
import { adminRoute } from "../../src/server/admin.js";
import { openStore } from "../../src/store/index.js";
import { clientQueue, type Store } from "../../src/store/port.js";
import { pullInbox } from "../helpers/inbox.js";
import type { ExternalSender } from "ts-mls";
import { decodeWith, externalSenderCodec } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { startTestServer, type TestServer } from "../helpers/server.js";

export interface HubFixture {
  readonly domain: string;
  readonly ca: DevCa;
  readonly dir: string;
  /** The hub's key file (a second DS on the same store and keys is another instance of this hub). */
  readonly keyFile: string;
  readonly store: Store;
  readonly ds: DeliveryService;
  readonly server: TestServer;
  readonly transport: DSTransport;
  readonly hub: DSClient;
  /** The domain's FanoutAuthToken keys (the ClientService issues with them, the hub checks local tokens with them). */
  readonly tokens: FanoutTokenKeys;
  hubSender(): Promise<ExternalSender>;
  /** A registered client of this domain (ClientService.Register: its key and FanoutAuthToken); `register: false` leaves it unregistered. */
  member(name: string, options?: Partial<MimiMemberOptions> & { register?: boolean }): Promise<MimiMember>;
  /** Process everything queued for `m` since the last call (and acknowledge it). */
  deliver(m: MimiMember): Promise<Awaited<ReturnType<MimiMember["processIncoming"]>>[]>;
  queueLength(clientId: string): Promise<number>;
  hosted(groupId: Uint8Array): ReturnType<DeliveryService["context"]["groups"]["get"]>;
  /** A group created by the first named member with the others added (and joined). */
  group<N extends string[]>(...names: N): Promise<{ groupId: Uint8Array; members: { [K in keyof N]: MimiMember } }>;
  close(): Promise<void>;
}

export async function startHub(
  domain = "hub.example",
  config: DeliveryServiceOptions["config"] = {},
  extra: Partial<Pick<DeliveryServiceOptions, "peers" | "maxCachedGroups">> & { readonly caDomains?: readonly string[] } = {},
): Promise<HubFixture> {
  const { caDomains = [], ...options } = extra;
  const ca = await makeDevCa([domain, ...caDomains]);
  const dir = await mkdtemp(join(tmpdir(), "mimi-ds-hub-"));
  const store = await openStore(join(dir, "ds.sqlite"));
  const keyFile = join(dir, "hub-keys.json");
  const tokens = FanoutTokenKeys.generate();
  const ds = await createDeliveryService({ domain, store, keyFile, config, localClients: localClientDirectory({ store, tokens, domain }), ...options });
  // Open registration (development mode): tests register their clients directly.
  // (No per-address registration quota: every test client registers from this one address.)
  const clients = createClientService({ domain, store, tokens, registration: { open: true }, registrationRate: { limit: 1_000_000, windowMs: 3_600_000 } });
  const server = await startTestServer(ca, domain, ds.handler, { hubInfo: ds.hubInfo, services: [adminRoute(ds.context), clients.route] });
  const transport = createDSTransport({ baseUrl: server.url, ca: ca.ca });
  const hub = new DSClient(transport);
  const cursors = new Map<string, bigint>();
  const f: HubFixture = {
    domain,
    ca,
    dir,
    keyFile,
    store,
    ds,
    server,
    transport,
    hub,
    tokens,
    async hubSender() {
      const info = await hub.hub.hubInfo({ cipherSuite: 1 });
      return decodeWith(externalSenderCodec, info.externalSender, "ExternalSender");
    },
    async member(name, options = {}) {
      const { register, ...memberOptions } = options;
      const m = await MimiMember.create({ clientId: `mimi://${domain}/u/${name}/d/1`, hub, local: transport, ...memberOptions });
      if (register !== false) await m.register();
      return m;
    },
    async deliver(m) {
      const q = clientQueue(m.clientId);
      await pullInbox(store, m.clientId);
      const entries = await store.read(q, cursors.get(q) ?? 0n, 1000);
      const out = [];
      for (const e of entries) out.push(await m.processIncoming(e.payload));
      if (entries.length > 0) {
        const last = entries[entries.length - 1]!.seq;
        cursors.set(q, last);
        await store.ack(q, last);
      }
      return out;
    },
    async queueLength(clientId) {
      await pullInbox(store, clientId);
      return (await store.queueInfo(clientQueue(clientId))).length;
    },
    hosted: (groupId) => ds.context.groups.get(groupKey(groupId)),
    async group<N extends string[]>(...names: N) {
      const members = [];
      for (const n of names) members.push(await f.member(n));
      const [creator, ...joiners] = members;
      const groupId = await creator!.createGroup(await f.hubSender());
      if (joiners.length > 0) await creator!.add(await Promise.all(joiners.map(async (j) => (await j.generateKeyPackage()).publicPackage)));
      for (const j of joiners) await f.deliver(j);
      return { groupId, members: members as { [K in keyof N]: MimiMember } };
    },
    async close() {
      clients.close();
      transport.close();
      await server.close();
      await store.close();
      await ca.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return f;
}
