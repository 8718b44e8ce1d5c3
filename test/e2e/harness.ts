// Real `serve` processes, one per domain, on loopback over TLS with a shared
// development CA, each configured with the others as peers (mutual TLS,
// fanout signature keys); and clients of each domain talking to their own DS.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { reservedPort } from "../helpers/ports.js";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExternalSender } from "ts-mls";
import { createDSTransport, DSClient, MimiMember, type DSTransport } from "../../src/client/index.js";
import { HubIdentity } from "../../src/ds/hub-identity.js";
import { generateIssuerKeyPair, issueRegistrationCredential, parseIssuerPrivateKey } from "../../src/delivery/registration.js";
import { decodeWith, externalSenderCodec } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

interface DomainNode {
  readonly domain: string;
  readonly port: number;
  readonly dataDir: string;
  server?: ServeProcess;
}

/** A member of a group, with the stream of its own DS queue. */
export class E2EClient {
  private readonly received: { sequence: bigint; mlsMessage: Uint8Array }[] = [];
  /** Every queue sequence received, in arrival order (across reconnects). */
  readonly sequences: bigint[] = [];
  private readonly abort = new AbortController();
  private acked = 0n;
  private wake: (() => void) | undefined;
  private pumping: Promise<void> | undefined;

  constructor(readonly member: MimiMember) {}

  get id(): string {
    return this.member.clientId;
  }

  /** Keep a Receive stream open (reconnecting, resuming after the last acknowledged entry). */
  startInbox(): void {
    const local = this.member.local!;
    const loop = async () => {
      while (!this.abort.signal.aborted) {
        try {
          const after = this.received.length > 0 ? this.received[this.received.length - 1]!.sequence : this.acked;
          for await (const m of local.receive(after, this.abort.signal)) {
            this.received.push(m);
            this.sequences.push(m.sequence);
            this.wake?.();
          }
        } catch {
          if (this.abort.signal.aborted) return;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    this.pumping = loop();
  }

  /** Wait for `n` queued messages, process them in order, acknowledge; the results. */
  async process(n: number, timeoutMs = 20_000): Promise<Awaited<ReturnType<MimiMember["processIncoming"]>>[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n) {
      if (Date.now() > deadline) throw new Error(`${this.id}: ${this.received.length} of ${n} messages after ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
    }
    const batch = this.received.splice(0, n);
    const out = [];
    for (const m of batch) out.push(await this.member.processIncoming(m.mlsMessage));
    this.acked = batch[batch.length - 1]!.sequence;
    await this.member.local!.acknowledge(this.acked);
    return out;
  }

  /** Nothing more arrives within `ms`. */
  async expectQuiet(ms = 300): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    if (this.received.length > 0) throw new Error(`${this.id}: unexpected ${this.received.length} messages`);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.pumping;
  }
}

export class Federation {
  private readonly transports: DSTransport[] = [];
  private readonly clients: E2EClient[] = [];
  /** The provider's registration issuer (one for the whole federation, as a test simplification). */
  private readonly issuer = generateIssuerKeyPair();

  private constructor(
    readonly ca: DevCa,
    readonly root: string,
    private readonly nodes: Map<string, DomainNode>,
  ) {}

  static async start(domains: readonly string[], args: readonly string[] = []): Promise<Federation> {
    const ca = await makeDevCa(domains);
    const root = await mkdtemp(join(tmpdir(), "mimi-ds-fed-"));
    const nodes = new Map<string, DomainNode>();
    const keys = new Map<string, Uint8Array>();
    for (const domain of domains) {
      const dataDir = join(root, domain);
      // The hub key file is made ahead so that every peer can be told its fanout key.
      keys.set(domain, (await HubIdentity.open(domain, join(dataDir, "hub-keys.json"))).fanoutPublicKey);
      nodes.set(domain, { domain, port: await reservedPort(), dataDir });
    }
    const f = new Federation(ca, root, nodes);
    for (const n of nodes.values()) {
      const peers = [...nodes.values()]
        .filter((p) => p.domain !== n.domain)
        .map((p) => ({ domain: p.domain, endpoint: `https://localhost:${p.port}`, ca: ca.caPath, dsSignatureKey: Buffer.from(keys.get(p.domain)!).toString("base64") }));
      await writeFile(join(root, `${n.domain}.peers.json`), JSON.stringify(peers, null, 2));
    }
    await Promise.all(domains.map((d) => f.startDomain(d, args)));
    return f;
  }

  async startDomain(domain: string, args: readonly string[] = []): Promise<void> {
    const n = this.nodes.get(domain)!;
    // Registration the secure way: every client brings a credential of the provider.
    const keyFile = join(this.root, "registration-issuer.pub.pem");
    await writeFile(keyFile, this.issuer.publicKeyPem);
    n.server = await spawnServe({
      domain,
      dataDir: n.dataDir,
      certsDir: this.ca.dir,
      registration: { keyFile },
      args: ["--listen", `127.0.0.1:${n.port}`, "--peers", join(this.root, `${domain}.peers.json`), ...args],
    });
  }

  /** A RegistrationCredential of the provider for this client id and signature key. */
  registrationCredential(clientId: string, signaturePublicKey: Uint8Array): Uint8Array {
    return issueRegistrationCredential(parseIssuerPrivateKey(this.issuer.privateKeyPem), {
      clientId: new TextEncoder().encode(clientId),
      signaturePublicKey,
      notBeforeMs: BigInt(Date.now() - 60_000),
      notAfterMs: BigInt(Date.now() + 3_600_000),
    });
  }

  async stopDomain(domain: string): Promise<void> {
    await this.nodes.get(domain)!.server?.stop();
  }

  /** SIGKILL: the domain's DS crashes (nothing drained). */
  async crashDomain(domain: string): Promise<void> {
    await this.nodes.get(domain)!.server?.crash();
  }

  /** The running serve process of `domain`. */
  server(domain: string): ServeProcess {
    const s = this.nodes.get(domain)?.server;
    if (s === undefined) throw new Error(`${domain} is not running`);
    return s;
  }

  /** The domain's data directory (its SQLite store is `ds.sqlite` in it). */
  dataDir(domain: string): string {
    return this.nodes.get(domain)!.dataDir;
  }

  url(domain: string): string {
    return `https://localhost:${this.nodes.get(domain)!.port}`;
  }

  transport(domain: string): DSTransport {
    const t = createDSTransport({ baseUrl: this.url(domain), ca: this.ca.ca });
    this.transports.push(t);
    return t;
  }

  /** A DS client of `domain` (as its clients see it). */
  ds(domain: string): DSClient {
    return new DSClient(this.transport(domain));
  }

  async hubSender(domain: string): Promise<ExternalSender> {
    const info = await this.ds(domain).hub.hubInfo({ cipherSuite: 1 });
    return decodeWith(externalSenderCodec, info.externalSender, "ExternalSender");
  }

  /** The hub's view of a group: epoch and tree hash of its current GroupInfo. */
  async hubView(hubDomain: string, groupId: Uint8Array): Promise<{ epoch: bigint; treeHash: string }> {
    const info = await this.ds(hubDomain).externalCommitInfo(groupId);
    if (info.groupInfo.wireformat !== "mls_group_info") throw new Error("no GroupInfo");
    const gc = info.groupInfo.groupInfo.groupContext;
    return { epoch: gc.epoch, treeHash: Buffer.from(gc.treeHash).toString("hex") };
  }

  /** A registered client of `domain` with `keyPackages` published, its inbox streaming. */
  async client(name: string, domain: string, keyPackages = 2, signatureKeyPair?: MimiMember["signatureKeyPair"]): Promise<E2EClient> {
    const t = this.transport(domain);
    const member = await MimiMember.create({
      clientId: `mimi://${domain}/u/${name}/d/1`,
      hub: new DSClient(t),
      local: t,
      ...(signatureKeyPair !== undefined ? { signatureKeyPair } : {}),
    });
    await member.register({ registrationCredential: this.registrationCredential(member.clientId, member.signatureKeyPair.publicKey) });
    if (keyPackages > 0) await member.publishKeyPackages(keyPackages);
    const c = new E2EClient(member);
    c.startInbox();
    this.clients.push(c);
    return c;
  }

  async close(): Promise<void> {
    for (const c of this.clients) await c.stop();
    for (const t of this.transports) t.close();
    for (const n of this.nodes.values()) if (n.server !== undefined && n.server.child.exitCode === null) await n.server.stop();
    await this.ca.cleanup();
    await rm(this.root, { recursive: true, force: true });
  }
}
