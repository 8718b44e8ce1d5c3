// End to end with real `serve` processes (a.example hosts, b.example is a
// guest DS), both started with --client-policy rfc9420: a group created by
// CoreCrypto with unmodified KeyPackages, CoreCrypto and ts-mls clients on
// both domains, every request of b's clients through their own DS (proxied
// to the hub over mutual TLS), fanout to b streamed and delivered without
// FanoutAuth tokens to b's CoreCrypto client.
//
// Bridged in the open (docs/interop.md): CoreCrypto cannot sign, so its
// DSRequests go anonymous (the hub's policy attributes commits by their MLS
// signature), and its ClientService calls (register, receive, acknowledge)
// are signed with a second key the test gives the CoreCrypto device for
// talking to its own DS: CoreCrypto cannot prove possession of its MLS key
// to the DS, so it can neither register it nor publish its KeyPackages to
// the directory (which takes only packages signed by the registered key);
// its KeyPackages are handed to the adder directly, as its own provider's
// directory would.
import type { RequestAuth } from "../../src/client/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getCiphersuiteFromName, getCiphersuiteImpl } from "ts-mls";
import { DSClient, LocalClientApi, MimiMember } from "../../src/client/index.js";
import { decodeKeyPackageBytes, encodeKeyPackageBytes } from "../../src/wire/index.js";
import { E2EClient, Federation } from "../e2e/harness.js";
import { CoreCryptoClient, dsSubmitter, sendFromCoreCrypto, userDeviceId, type Decrypted } from "./corecrypto.js";

const A = "a.example";
const B = "b.example";
let fed: Federation;
const clients: E2EClient[] = [];
const inboxes: CoreCryptoInbox[] = [];
const started = Date.now();

beforeAll(async () => {
  // As in corecrypto.test.ts: CoreCrypto's leaves cannot be bound to registrations (docs/interop.md).
  fed = await Federation.start([A, B], ["--client-policy", "rfc9420", "--local-clients", "unchecked", "--external-joins", "open"]);
});
afterAll(async () => {
  for (const c of clients) await c.stop();
  for (const i of inboxes) await i.stop();
  await fed?.close();
  console.log(`CoreCrypto end-to-end suite: ${Date.now() - started} ms`);
});

/** A CoreCrypto client's queue at its own DS, streamed with ClientAuth made by its bridge key. */
class CoreCryptoInbox {
  private readonly received: Uint8Array[] = [];
  private readonly abort = new AbortController();
  private last = 0n;
  private pumping: Promise<void> | undefined;
  constructor(
    readonly client: CoreCryptoClient,
    private readonly local: LocalClientApi,
    /** The bridge: the key the device registered with its own DS (CoreCrypto cannot sign for it). */
    readonly registeredAuth: () => RequestAuth,
  ) {}

  static async open(client: CoreCryptoClient, domain: string): Promise<CoreCryptoInbox> {
    const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
    const bridgeKey = await cs.signature.keygen();
    const local = new LocalClientApi(fed.transport(domain), { clientId: client.clientId, signaturePrivateKey: bridgeKey.signKey, signature: cs.signature });
    // The provider's credential for this device's id and bridge key (the federation's issuer).
    await local.register(bridgeKey.publicKey, 1, { registrationCredential: fed.registrationCredential(client.clientId, bridgeKey.publicKey) });
    const inbox = new CoreCryptoInbox(client, local, () => ({ kind: "registered", clientId: client.clientId, signaturePrivateKey: bridgeKey.signKey, signature: cs.signature }));
    inbox.pumping = (async () => {
      while (!inbox.abort.signal.aborted) {
        try {
          for await (const m of local.receive(inbox.last, inbox.abort.signal)) {
            inbox.received.push(m.mlsMessage);
            inbox.last = m.sequence;
          }
        } catch {
          if (inbox.abort.signal.aborted) return;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    })();
    inboxes.push(inbox);
    return inbox;
  }

  /** Wait for `n` messages; Welcomes join, the rest is decrypted; acknowledged. */
  async process(n: number, groupId: Uint8Array, timeoutMs = 20_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n) {
      if (Date.now() > deadline) throw new Error(`${this.client.clientId}: ${this.received.length} of ${n} messages`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const out: string[] = [];
    for (const m of this.received.splice(0, n)) {
      if (m[2] === 0 && m[3] === 3) {
        await this.client.joinFromWelcome(m);
        out.push("joined");
        continue;
      }
      try {
        const d: Decrypted = await this.client.decrypt(groupId, m);
        out.push(d.kind === "application" ? `text:${d.text}` : d.kind);
      } catch (err) {
        if (!/DuplicateMessage/.test(String(err))) throw err;
        out.push("own"); // anonymous send_message reaches its sender too
      }
    }
    await this.local.acknowledge(this.last);
    return out;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.pumping;
  }
}

/** A ts-mls client of `domain` with an id CoreCrypto can read, registered, with KeyPackages published. */
async function tsClient(domain: string): Promise<E2EClient> {
  const t = fed.transport(domain);
  const member = await MimiMember.create({ clientId: userDeviceId(domain), hub: new DSClient(t), local: t });
  await member.register({ registrationCredential: fed.registrationCredential(member.clientId, member.signatureKeyPair.publicKey) });
  await member.publishKeyPackages(2);
  const c = new E2EClient(member);
  c.startInbox();
  clients.push(c);
  return c;
}

async function expectInSync(groupId: Uint8Array, ts: E2EClient[], cc: CoreCryptoClient[]): Promise<void> {
  const hub = await fed.hubView(A, groupId);
  for (const c of ts) {
    expect(c.member.epoch, c.id).toBe(hub.epoch);
    expect(Buffer.from(c.member.treeHash).toString("hex"), c.id).toBe(hub.treeHash);
  }
  for (const c of cc) expect(await c.epoch(groupId), c.clientId).toBe(hub.epoch);
}

const kinds = (rs: { kind: string }[]) => rs.map((r) => r.kind);

describe("CoreCrypto and ts-mls clients of two DS processes (rfc9420 policy)", () => {
  it("a CoreCrypto-created group: CoreCrypto adds ts-mls clients of both domains, a ts-mls client adds CoreCrypto's unmodified KeyPackage, messages and commits flow", async () => {
    const alice = await tsClient(A);
    const bob = await tsClient(B);
    const cc = await CoreCryptoClient.create({ domain: B });
    const ccInbox = await CoreCryptoInbox.open(cc, B);
    const ownDs = fed.ds(B); // CoreCrypto's requests go to its own DS, which proxies them to the hub
    cc.submit = dsSubmitter(ownDs);

    const groupId = await fed.ds(A).requestGroupId();
    await cc.createConversation(groupId, (await fed.hubSender(A)).signaturePublicKey);
    await cc.firstCommit(groupId);
    expect((await fed.hubView(A, groupId)).epoch).toBe(1n);

    // KeyPackages of ts-mls clients from the directory (through b, which asks a for alice's).
    // Asked as the CoreCrypto device, signed with its bridge key (anonymous fetches are refused).
    const kps = await ownDs.keyPackages([alice.id, bob.id], [1], ccInbox.registeredAuth());
    await cc.add(groupId, kps.map((k) => encodeKeyPackageBytes(k)));
    expect(kinds(await alice.process(1))).toEqual(["joined"]);
    expect(kinds(await bob.process(1))).toEqual(["joined"]);
    await expectInSync(groupId, [alice, bob], [cc]);

    // alice adds a second CoreCrypto client of b with its unmodified KeyPackage: the Welcome reaches b without a token.
    const cc2 = await CoreCryptoClient.create({ domain: B });
    const cc2Inbox = await CoreCryptoInbox.open(cc2, B);
    cc2.submit = dsSubmitter(fed.ds(B));
    await alice.member.add([decodeKeyPackageBytes(await cc2.keyPackage())]);
    expect(await cc2Inbox.process(1, groupId)).toEqual(["joined"]);
    expect(kinds(await bob.process(1))).toEqual(["commit"]);
    expect(await ccInbox.process(1, groupId)).toEqual(["commit"]);
    await expectInSync(groupId, [alice, bob], [cc, cc2]);

    // Application messages: CoreCrypto (anonymous, b -> a -> everyone) and ts-mls.
    await sendFromCoreCrypto(ownDs, cc, groupId, "from CoreCrypto on b");
    expect((await alice.process(1))[0]).toMatchObject({ kind: "application", text: "from CoreCrypto on b" });
    expect((await bob.process(1))[0]).toMatchObject({ kind: "application", text: "from CoreCrypto on b" });
    expect(await cc2Inbox.process(1, groupId)).toEqual(["text:from CoreCrypto on b"]);
    expect(await ccInbox.process(1, groupId)).toEqual(["own"]);
    await bob.member.send("from ts-mls on b");
    expect(await ccInbox.process(1, groupId)).toEqual(["text:from ts-mls on b"]);
    expect(await cc2Inbox.process(1, groupId)).toEqual(["text:from ts-mls on b"]);
    expect((await alice.process(1))[0]).toMatchObject({ text: "from ts-mls on b" });

    // Commits by the CoreCrypto client that joined from a ts-mls Welcome: update, then remove of bob.
    await cc2.update(groupId);
    for (const c of [alice, bob]) expect(kinds(await c.process(1))).toEqual(["commit"]);
    expect(await ccInbox.process(1, groupId)).toEqual(["commit"]);
    await cc2.remove(groupId, [bob.id]);
    expect(kinds(await alice.process(1))).toEqual(["commit"]);
    expect(await bob.process(1)).toEqual([expect.objectContaining({ removed: true })]);
    expect(await ccInbox.process(1, groupId)).toEqual(["commit"]);
    await expectInSync(groupId, [alice], [cc, cc2]);
  });
});
