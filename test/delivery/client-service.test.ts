// ClientService over real TLS with a real SQLite store and real ts-mls
// KeyPackages: registration, KeyPackage upload checks, the queue stream with
// resume and acknowledgement.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClientRpcName } from "../../src/client/local.js";
import { createClientService, FanoutTokenKeys, type ClientServiceHandle } from "../../src/delivery/index.js";
import { engineCrypto, keyPackageRef } from "../../src/mls/index.js";
import { clientQueue } from "../../src/store/index.js";
import { decodeKeyPackageBytes } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";
import { dsTransport, SUITE, SUITE_ID, tempStore, TestClient, waitFor, type TempStore } from "./helpers.js";
import type { DSTransport } from "../../src/client/transport.js";

let ca: DevCa;
let db: TempStore;
let server: TestServer;
let service: ClientServiceHandle;
let transport: DSTransport;
const tokens = FanoutTokenKeys.generate();

beforeAll(async () => {
  ca = await makeDevCa(["a.example"]);
  db = await tempStore();
  // Development mode (first use binds) for these tests; provider credentials are tested below.
  service = createClientService({ domain: "a.example", store: db.store, tokens, registration: { open: true } });
  server = await startTestServer(ca, "a.example", recordingHandler(), { services: [service.route], drainTimeoutMs: 500 });
  transport = dsTransport(server.url, ca.ca);
});
afterAll(async () => {
  transport.close();
  service.close();
  await server.close();
  await db.cleanup();
  await ca.cleanup();
});

let lastMessage = "";
async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    lastMessage = ConnectError.from(e).rawMessage;
    return ConnectError.from(e).code;
  }
}

describe("Register", () => {
  it("binds the id to the key on first use, hands out fresh tokens, refuses another key", async () => {
    const alice = await TestClient.create("alice:1@a.example", transport);
    const t1 = await alice.register();
    const t2 = await alice.register();
    expect(t1.length).toBe(61);
    expect(Buffer.from(t1).equals(Buffer.from(t2))).toBe(false);
    const rec = await db.store.getClient("alice:1@a.example");
    expect(Buffer.from(rec!.signaturePublicKey).equals(Buffer.from(alice.sig.publicKey))).toBe(true);
    // Both tokens stay valid: tokens in KeyPackages and groups are not revoked by a new one.
    expect(tokens.verify("alice:1@a.example", t1)).toBeDefined();
    expect(tokens.verify("alice:1@a.example", t2)).toBeDefined();
    // Another key for the same id: refused.
    const impostor = await TestClient.create("alice:1@a.example", transport);
    expect(await codeOf(impostor.register())).toBe(Code.PermissionDenied);
  });

  it("refuses ids of other domains, unproven keys and stale timestamps", async () => {
    const foreign = await TestClient.create("bob:1@b.example", transport);
    expect(await codeOf(foreign.register())).toBe(Code.PermissionDenied);
    // Signed with one key, registering another: no proof of possession.
    const carol = await TestClient.create("carol:1@a.example", transport);
    const other = await TestClient.create("carol:1@a.example");
    const fields = { method: "register", signaturePublicKey: other.sig.publicKey, cipherSuite: SUITE_ID, registrationCredential: new Uint8Array() } as const;
    const auth = await carol.api!.auth(fields);
    expect(await codeOf(carol.api!.rpc.register({ auth, signaturePublicKey: other.sig.publicKey, cipherSuite: SUITE_ID }))).toBe(
      Code.Unauthenticated,
    );
    const stale = carol.with(transport, { now: () => Date.now() - 6 * 60_000 });
    expect(await codeOf(stale.register())).toBe(Code.Unauthenticated);
    const future = carol.with(transport, { now: () => Date.now() + 6 * 60_000 });
    expect(await codeOf(future.register())).toBe(Code.Unauthenticated);
    expect(await codeOf(carol.api!.rpc.register({ auth, signaturePublicKey: carol.sig.publicKey, cipherSuite: 0xfffe }))).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("PublishKeyPackages", () => {
  let dave: TestClient;
  beforeAll(async () => {
    dave = await TestClient.create("mimi://a.example/u/dave/d/1", transport);
    await dave.register();
  });

  it("stores bare KeyPackages by KeyPackageRef, and a last-resort one", async () => {
    const kp1 = await dave.keyPackage();
    const kp2 = await dave.keyPackage();
    const last = await dave.keyPackage({ lastResort: true });
    expect(await dave.api!.publishKeyPackages([kp1.bytes, kp2.bytes], last.bytes)).toBe(2);
    const got = await db.store.consumeKeyPackage(dave.clientId);
    expect(got!.ciphersuite).toBe(SUITE_ID);
    expect(got!.lastResort).toBe(false);
    const bare = decodeKeyPackageBytes(got!.keyPackage); // a KeyPackage, not an MLSMessage
    const ref = keyPackageRef(await engineCrypto(SUITE), bare);
    expect(Buffer.from(got!.ref).equals(Buffer.from(ref))).toBe(true);
    expect(Buffer.from(ref).equals(Buffer.from(keyPackageRef(await engineCrypto(SUITE), kp1.keyPackage)))).toBe(true);
    await db.store.consumeKeyPackage(dave.clientId);
    const lr = await db.store.consumeKeyPackage(dave.clientId);
    expect(lr!.lastResort).toBe(true);
  });

  it("rejects bad signatures, foreign ids and keys, missing or foreign tokens, expired lifetimes", async () => {
    const flip = (b: Uint8Array): Uint8Array => {
      const c = new Uint8Array(b);
      c[0]! ^= 1;
      return c;
    };
    const badKpSig = await dave.keyPackage({ tamper: (kp) => ({ ...kp, signature: flip(kp.signature) }) });
    expect(await codeOf(dave.api!.publishKeyPackages([badKpSig.bytes]))).toBe(Code.InvalidArgument);
    expect(lastMessage).toMatch(/KeyPackage signature/);
    const badLeafSig = await dave.keyPackage({
      tamper: (kp) => ({ ...kp, leafNode: { ...kp.leafNode, signature: flip(kp.leafNode.signature) } }),
      resign: true,
    });
    expect(await codeOf(dave.api!.publishKeyPackages([badLeafSig.bytes]))).toBe(Code.InvalidArgument);
    expect(lastMessage).toMatch(/LeafNode signature/);

    const foreignId = await dave.keyPackage({ credentialId: "mallory:1@a.example" });
    expect(await codeOf(dave.api!.publishKeyPackages([foreignId.bytes]))).toBe(Code.PermissionDenied);
    expect(lastMessage).toMatch(/credential names mallory/);
    const otherKey = await dave.keyPackage({ sig: await (await dave.cs).signature.keygen() });
    expect(await codeOf(dave.api!.publishKeyPackages([otherKey.bytes]))).toBe(Code.PermissionDenied);

    const noToken = await dave.keyPackage({ token: null });
    expect(await codeOf(dave.api!.publishKeyPackages([noToken.bytes]))).toBe(Code.InvalidArgument);
    expect(lastMessage).toMatch(/no FanoutAuth extension/);
    const erin = await TestClient.create("erin:1@a.example", transport);
    const erinToken = await erin.register();
    const foreignToken = await dave.keyPackage({ token: erinToken });
    expect(await codeOf(dave.api!.publishKeyPackages([foreignToken.bytes]))).toBe(Code.PermissionDenied);
    expect(lastMessage).toMatch(/FanoutAuthToken is not valid/);
    const forged = new Uint8Array(dave.token!);
    forged[forged.length - 1]! ^= 1;
    expect(await codeOf(dave.api!.publishKeyPackages([(await dave.keyPackage({ token: forged })).bytes]))).toBe(Code.PermissionDenied);

    const expired = await dave.keyPackage({ lifetime: { notBefore: 0n, notAfter: BigInt(Math.floor(Date.now() / 1000) - 3600) } });
    expect(await codeOf(dave.api!.publishKeyPackages([expired.bytes]))).toBe(Code.InvalidArgument);
    // The role and the marking agree: no last_resort extension in the regular list, and vice versa.
    const marked = await dave.keyPackage({ lastResort: true });
    expect(await codeOf(dave.api!.publishKeyPackages([marked.bytes]))).toBe(Code.InvalidArgument);
    const unmarked = await dave.keyPackage();
    expect(await codeOf(dave.api!.publishKeyPackages([], unmarked.bytes))).toBe(Code.InvalidArgument);
    // Not a KeyPackage at all.
    expect(await codeOf(dave.api!.publishKeyPackages([Uint8Array.of(0, 1, 0, 5)]))).toBe(Code.InvalidArgument);
    // The same package twice.
    const dup = await dave.keyPackage();
    await dave.api!.publishKeyPackages([dup.bytes]);
    expect(await codeOf(dave.api!.publishKeyPackages([dup.bytes]))).toBe(Code.AlreadyExists);
    // Nothing of the refused uploads was stored.
    expect(await db.store.countKeyPackages(dave.clientId)).toBe(1);
  });

  it("refuses stale ClientAuth, a signature made for another RPC, and unregistered clients", async () => {
    const kp = await dave.keyPackage();
    const stale = dave.with(transport, { now: () => Date.now() - 10 * 60_000 });
    expect(await codeOf(stale.api!.publishKeyPackages([kp.bytes]))).toBe(Code.Unauthenticated);
    expect(lastMessage).toMatch(/timestamp/);
    const auth = await dave.api!.auth({ method: "receive", resumeAfter: 0n });
    expect(await codeOf(dave.api!.rpc.publishKeyPackages({ auth, keyPackages: [kp.bytes] }))).toBe(Code.Unauthenticated);
    // Signed for PublishKeyPackages, but as if sent to Receive.
    const misnamed = await dave.api!.auth({ method: "publishKeyPackages", keyPackages: [kp.bytes], lastResortKeyPackage: new Uint8Array() }, ClientRpcName.receive);
    expect(await codeOf(dave.api!.rpc.publishKeyPackages({ auth: misnamed, keyPackages: [kp.bytes] }))).toBe(Code.Unauthenticated);
    expect(lastMessage).toMatch(/signature/);
    const nobody = await TestClient.create("nobody:1@a.example", transport);
    expect(await codeOf(nobody.api!.acknowledge(1n))).toBe(Code.NotFound);
    expect(await codeOf(dave.api!.rpc.publishKeyPackages({ keyPackages: [kp.bytes] }))).toBe(Code.Unauthenticated);
  });
});

describe("Receive and AcknowledgeMessages", () => {
  const te = new TextEncoder();
  const enqueue = async (clientId: string, ...payloads: string[]) => {
    await db.store.apply({ ops: payloads.map((p) => ({ kind: "append" as const, queue: clientQueue(clientId), payload: te.encode(p) })) });
  };
  const td = new TextDecoder();

  it("streams entries appended while streaming, resumes after the last acknowledged one without loss or duplicates", async () => {
    const fred = await TestClient.create("fred:1@a.example", transport);
    await fred.register();
    await enqueue(fred.clientId, "m1", "m2");
    const seen: { seq: bigint; text: string }[] = [];
    const stop = new AbortController();
    const reading = (async () => {
      for await (const m of fred.api!.receive(0n, stop.signal)) {
        seen.push({ seq: m.sequence, text: td.decode(m.mlsMessage) });
        if (m.sequence === 3n) await fred.api!.acknowledge(3n);
      }
    })().catch((e: unknown) => ConnectError.from(e));
    await waitFor(() => seen.length === 2, 10_000, "first two");
    await enqueue(fred.clientId, "m3");
    await enqueue(fred.clientId, "m4", "m5");
    await waitFor(() => seen.length === 5, 10_000, "five");
    stop.abort();
    expect(((await reading) as ConnectError).code).toBe(Code.Canceled);
    expect(seen.map((s) => s.text)).toEqual(["m1", "m2", "m3", "m4", "m5"]);
    expect(seen.map((s) => s.seq)).toEqual([1n, 2n, 3n, 4n, 5n]);
    expect((await db.store.queueInfo(clientQueue(fred.clientId))).firstSeq).toBe(4n); // acknowledged up to 3

    // Disconnected; more arrives; resume after the last acknowledged sequence.
    await enqueue(fred.clientId, "m6");
    const again: string[] = [];
    const stop2 = new AbortController();
    const reading2 = (async () => {
      for await (const m of fred.api!.receive(3n, stop2.signal)) again.push(`${m.sequence}:${td.decode(m.mlsMessage)}`);
    })().catch(() => undefined);
    await waitFor(() => again.length === 3, 10_000, "resumed");
    await enqueue(fred.clientId, "m7");
    await waitFor(() => again.length === 4, 10_000, "live after resume");
    stop2.abort();
    await reading2;
    expect(again).toEqual(["4:m4", "5:m5", "6:m6", "7:m7"]);

    // Resuming after 5 acknowledges 4 and 5 implicitly.
    const stop3 = new AbortController();
    const third: bigint[] = [];
    const reading3 = (async () => {
      for await (const m of fred.api!.receive(5n, stop3.signal)) third.push(m.sequence);
    })().catch(() => undefined);
    await waitFor(() => third.length === 2, 10_000, "third");
    stop3.abort();
    await reading3;
    expect(third).toEqual([6n, 7n]);
    const info = await db.store.queueInfo(clientQueue(fred.clientId));
    expect(info.firstSeq).toBe(6n);
    await fred.api!.acknowledge(7n);
    expect((await db.store.queueInfo(clientQueue(fred.clientId))).length).toBe(0);
  });

  it("pages a long queue in order and skips entries acknowledged meanwhile", async () => {
    const gina = await TestClient.create("gina:1@a.example", transport);
    await gina.register();
    const n = 300; // several pages of 64
    await db.store.apply({
      ops: Array.from({ length: n }, (_, i) => ({ kind: "append" as const, queue: clientQueue(gina.clientId), payload: te.encode(`e${i + 1}`) })),
    });
    const seqs: bigint[] = [];
    const stop = new AbortController();
    const reading = (async () => {
      for await (const m of gina.api!.receive(0n, stop.signal)) {
        seqs.push(m.sequence);
        expect(td.decode(m.mlsMessage)).toBe(`e${m.sequence}`);
      }
    })().catch(() => undefined);
    await waitFor(() => seqs.length === n, 20_000, "all entries");
    stop.abort();
    await reading;
    expect(seqs).toEqual(Array.from({ length: n }, (_, i) => BigInt(i + 1)));
  });

  it("ends open streams with Unavailable when the service closes", async () => {
    const local = await tempStore();
    const svc = createClientService({ domain: "a.example", store: local.store, tokens, registration: { open: true } });
    const srv = await startTestServer(ca, "a.example", recordingHandler(), { services: [svc.route], drainTimeoutMs: 5_000 });
    const t = dsTransport(srv.url, ca.ca);
    try {
      const hank = await TestClient.create("hank:1@a.example", t);
      await hank.register();
      const result = (async () => {
        for await (const _ of hank.api!.receive(0n)) void _;
      })().then(
        () => "ended",
        (e: unknown) => ConnectError.from(e).code,
      );
      await new Promise((r) => setTimeout(r, 200));
      svc.close();
      expect(await result).toBe(Code.Unavailable);
    } finally {
      t.close();
      await srv.close();
      await local.cleanup();
    }
  });
});
