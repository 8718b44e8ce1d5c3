// Issue 13 against ClientService over real TLS and SQLite, as an attacker
// would try it: captured ClientAuths replayed or reused with other fields
// (item 4), re-uploads of consumed KeyPackages (item 4), first-use
// registration of someone else's id and look-alike ids (item 3, Low), and the
// quotas (item 11) and per-client stream limit (item 1).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createClientService,
  FanoutTokenKeys,
  generateIssuerKeyPair,
  issueRegistrationCredential,
  parseIssuerPrivateKey,
  parseIssuerPublicKeys,
  type ClientServiceHandle,
  type ClientServiceOptions,
} from "../../src/delivery/index.js";
import { clientQueue } from "../../src/store/index.js";
import { ReceiveRequestSchema } from "../../gen/mimi/ds/v1/client_pb.js";
import { closed, grpcFrame, grpcStream, h2session } from "../helpers/h2probe.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";
import { dsTransport, tempStore, TestClient, waitFor, type TempStore } from "./helpers.js";
import type { DSTransport } from "../../src/client/transport.js";

const te = new TextEncoder();
const tokens = FanoutTokenKeys.generate();
const issuer = generateIssuerKeyPair();
const issuerKey = parseIssuerPrivateKey(issuer.privateKeyPem);
const otherIssuer = parseIssuerPrivateKey(generateIssuerKeyPair().privateKeyPem);

let ca: DevCa;

interface Svc {
  readonly db: TempStore;
  readonly service: ClientServiceHandle;
  readonly server: TestServer;
  readonly transport: DSTransport;
}
const open: Svc[] = [];

async function start(extra: Partial<ClientServiceOptions>): Promise<Svc> {
  const db = await tempStore();
  const service = createClientService({ domain: "a.example", store: db.store, tokens, ...extra });
  const server = await startTestServer(ca, "a.example", recordingHandler(), { services: [service.route], drainTimeoutMs: 500 });
  const s = { db, service, server, transport: dsTransport(server.url, ca.ca) };
  open.push(s);
  return s;
}

beforeAll(async () => {
  ca = await makeDevCa(["a.example"]);
});
afterAll(async () => {
  for (const s of open) {
    s.transport.close();
    s.service.close();
    await s.server.close();
    await s.db.cleanup();
  }
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

const credentialFor = (c: TestClient, o: { key?: Uint8Array; id?: string; notAfterMs?: number; by?: typeof issuerKey } = {}) =>
  issueRegistrationCredential(o.by ?? issuerKey, {
    clientId: te.encode(o.id ?? c.clientId),
    signaturePublicKey: o.key ?? c.sig.publicKey,
    notBeforeMs: BigInt(Date.now() - 60_000),
    notAfterMs: BigInt(o.notAfterMs ?? Date.now() + 600_000),
  });

describe("ClientAuth covers the request and is accepted once (item 4)", () => {
  let s: Svc;
  let alice: TestClient;
  beforeAll(async () => {
    s = await start({ registration: { open: true } });
    alice = await TestClient.create("alice:1@a.example", s.transport);
    await alice.register();
  });

  it("a captured AcknowledgeMessages auth neither acknowledges another sequence nor works twice", async () => {
    await s.db.store.apply({
      ops: ["m1", "m2", "m3"].map((p) => ({ kind: "append" as const, queue: clientQueue(alice.clientId), payload: te.encode(p) })),
    });
    const captured = await alice.api!.auth({ method: "acknowledgeMessages", sequence: 1n });
    // The attack of the issue: the same auth with sequence 2^63-1 would empty the queue.
    expect(await codeOf(alice.api!.rpc.acknowledgeMessages({ auth: captured, sequence: (1n << 63n) - 1n }))).toBe(Code.Unauthenticated);
    expect((await s.db.store.queueInfo(clientQueue(alice.clientId))).length).toBe(3);
    expect(await codeOf(alice.api!.rpc.acknowledgeMessages({ auth: captured, sequence: 1n }))).toBe("ok");
    expect(await codeOf(alice.api!.rpc.acknowledgeMessages({ auth: captured, sequence: 1n }))).toBe(Code.Unauthenticated);
    expect(lastMessage).toMatch(/already used/);
    expect((await s.db.store.queueInfo(clientQueue(alice.clientId))).length).toBe(2);
  });

  it("a captured Receive auth reads the queue once, and not from another position", async () => {
    const captured = await alice.api!.auth({ method: "receive", resumeAfter: 1n });
    const read = async (resumeAfter: bigint): Promise<Code | bigint[]> => {
      const stop = new AbortController();
      const seen: bigint[] = [];
      try {
        for await (const m of alice.api!.rpc.receive({ auth: captured, resumeAfter }, { signal: stop.signal })) {
          seen.push(m.sequence);
          if (seen.length === 2) stop.abort();
        }
      } catch (e) {
        const err = ConnectError.from(e);
        if (err.code !== Code.Canceled) return err.code;
      }
      return seen;
    };
    expect(await read(0n)).toBe(Code.Unauthenticated); // another resume point (it would acknowledge nothing, but read all)
    expect(await read(1n)).toEqual([2n, 3n]);
    expect(await read(1n)).toBe(Code.Unauthenticated); // the replay
  });

  it("a captured Register auth does not hand out a second token", async () => {
    const fields = { method: "register", signaturePublicKey: alice.sig.publicKey, cipherSuite: 1, registrationCredential: new Uint8Array() } as const;
    const captured = await alice.api!.auth(fields);
    const req = { auth: captured, signaturePublicKey: alice.sig.publicKey, cipherSuite: 1 };
    expect(await codeOf(alice.api!.rpc.register(req))).toBe("ok");
    expect(await codeOf(alice.api!.rpc.register(req))).toBe(Code.Unauthenticated);
  });

  it("refuses a ClientAuth without a nonce or with one too short", async () => {
    const auth = await alice.api!.auth({ method: "acknowledgeMessages", sequence: 0n });
    expect(await codeOf(alice.api!.rpc.acknowledgeMessages({ auth: { ...auth, nonce: new Uint8Array() }, sequence: 0n }))).toBe(Code.Unauthenticated);
    expect(await codeOf(alice.api!.rpc.acknowledgeMessages({ auth: { ...auth, nonce: new Uint8Array(15) }, sequence: 0n }))).toBe(
      Code.Unauthenticated,
    );
    expect(lastMessage).toMatch(/nonce/);
  });

  it("a consumed KeyPackage is never accepted again, neither by a replayed upload nor by a fresh one", async () => {
    const kp = await alice.keyPackage();
    const other = await alice.keyPackage();
    const fields = { method: "publishKeyPackages", keyPackages: [kp.bytes], lastResortKeyPackage: new Uint8Array() } as const;
    const captured = await alice.api!.auth(fields);
    const upload = { auth: captured, keyPackages: [kp.bytes] };
    expect(await codeOf(alice.api!.rpc.publishKeyPackages(upload))).toBe("ok");
    // The package is handed out (what an anonymous key_packages fetch does).
    const fetched = await s.db.store.consumeKeyPackage(alice.clientId);
    expect(fetched).toBeDefined();
    expect(await s.db.store.countKeyPackages(alice.clientId)).toBe(0);
    // The captured upload again: a replay.
    expect(await codeOf(alice.api!.rpc.publishKeyPackages(upload))).toBe(Code.Unauthenticated);
    // Signed anew, by the client or by anyone holding its key, together with a new package: refused as a whole.
    expect(await codeOf(alice.api!.publishKeyPackages([other.bytes, kp.bytes]))).toBe(Code.AlreadyExists);
    expect(lastMessage).toMatch(/handed out/);
    expect(await s.db.store.countKeyPackages(alice.clientId)).toBe(0);
    expect(await s.db.store.consumeKeyPackage(alice.clientId)).toBeUndefined();
    // The new one alone is fine.
    expect(await alice.api!.publishKeyPackages([other.bytes])).toBe(1);
  });
});

describe("Register needs the provider's credential (item 3)", () => {
  let s: Svc;
  beforeAll(async () => {
    s = await start({ registration: { issuerKeys: parseIssuerPublicKeys(issuer.publicKeyPem) } });
  });

  it("an attacker cannot take the victim's id first; the victim registers with its credential", async () => {
    const victimId = "mimi://a.example/u/victim/d/1";
    const attacker = await TestClient.create(victimId, s.transport);
    const victim = await TestClient.create(victimId, s.transport);
    // First use without a credential: refused.
    expect(await codeOf(attacker.register())).toBe(Code.Unauthenticated);
    expect(lastMessage).toMatch(/registration_credential/);
    // The victim's credential does not carry the attacker's key, nor another id's credential.
    expect(await codeOf(attacker.register(credentialFor(victim)))).toBe(Code.PermissionDenied);
    expect(lastMessage).toMatch(/another signature key/);
    expect(await codeOf(attacker.register(credentialFor(attacker, { id: "mimi://a.example/u/attacker/d/1" })))).toBe(Code.PermissionDenied);
    // Signed by a key the operator did not configure, expired, or not a credential at all.
    expect(await codeOf(attacker.register(credentialFor(attacker, { by: otherIssuer })))).toBe(Code.PermissionDenied);
    expect(lastMessage).toMatch(/not signed by a configured issuer/);
    expect(await codeOf(victim.register(credentialFor(victim, { notAfterMs: Date.now() - 1000 })))).toBe(Code.PermissionDenied);
    expect(lastMessage).toMatch(/expired/);
    expect(await codeOf(victim.register(Uint8Array.of(1, 2, 3)))).toBe(Code.PermissionDenied);
    expect(await s.db.store.getClient(victimId)).toBeUndefined();

    expect(await codeOf(victim.register(credentialFor(victim)))).toBe("ok");
    const rec = await s.db.store.getClient(victimId);
    expect(Buffer.from(rec!.signaturePublicKey).equals(Buffer.from(victim.sig.publicKey))).toBe(true);
    // A fresh token later needs no credential (the ClientAuth proves the registered key) ...
    expect(await codeOf(victim.register())).toBe("ok");
    // ... and even a valid credential for the attacker's key does not rebind the id.
    expect(await codeOf(attacker.register(credentialFor(attacker)))).toBe(Code.PermissionDenied);
  });

  it("without a configured key (and without the development mode) nobody registers", async () => {
    const closed = await start({});
    const c = await TestClient.create("bob:1@a.example", closed.transport);
    expect(await codeOf(c.register())).toBe(Code.Unauthenticated);
    expect(lastMessage).toMatch(/registration is closed/);
    expect(await codeOf(c.register(credentialFor(c)))).toBe(Code.FailedPrecondition);
  });
});

describe("canonical client ids at Register (Low)", () => {
  it("refuses look-alikes of a registered id: case, port, userinfo, bare user@domain, non-ASCII", async () => {
    const s = await start({ registration: { open: true } });
    const reg = async (id: string) => codeOf((await TestClient.create(id, s.transport)).register());
    expect(await reg("mimi://a.example/u/victim/d/1")).toBe("ok");
    expect(await reg("alice:1@a.example")).toBe("ok");
    for (const lookAlike of [
      "mimi://A.EXAMPLE/u/victim/d/1",
      "mimi://a.example:8443/u/victim/d/1",
      "mimi://x@a.example/u/victim/d/1",
      "mimi://a.example/u/Victim/d/1",
      "mimi://a.example/u/victim/d/1/",
      "mimi://a.example/u//victim/d/1",
      "mimi://a.example/u/v%69ctim/d/1",
      "mimi://a.example/u/vıctim/d/1",
      "evil.example@a.example",
      "alice:1@A.Example",
      "alice:1@a.example:443",
      "alice:1:2@a.example",
    ]) {
      expect(await reg(lookAlike), lookAlike).toBe(Code.InvalidArgument);
      expect(await s.db.store.getClient(lookAlike)).toBeUndefined();
    }
  });
});

describe("quotas (item 11) and streams per client (item 1)", () => {
  it("a client keeps at most maxKeyPackagesPerClient packages; a refused upload stores nothing", async () => {
    const s = await start({ registration: { open: true }, maxKeyPackagesPerClient: 5 });
    const c = await TestClient.create("carol:1@a.example", s.transport);
    await c.register();
    const kps = await Promise.all(Array.from({ length: 7 }, () => c.keyPackage()));
    expect(await c.api!.publishKeyPackages(kps.slice(0, 4).map((k) => k.bytes))).toBe(4);
    expect(await codeOf(c.api!.publishKeyPackages(kps.slice(4, 6).map((k) => k.bytes)))).toBe(Code.ResourceExhausted);
    expect(lastMessage).toMatch(/quota_exceeded/);
    expect(await s.db.store.countKeyPackages(c.clientId)).toBe(4);
    // The last-resort package is not counted.
    expect(await c.api!.publishKeyPackages([kps[4]!.bytes], (await c.keyPackage({ lastResort: true })).bytes)).toBe(5);
    await s.db.store.consumeKeyPackage(c.clientId);
    expect(await c.api!.publishKeyPackages([kps[5]!.bytes])).toBe(5);
  });

  it("new registrations per remote address are limited; refreshing an existing one is not", async () => {
    const s = await start({ registration: { open: true }, registrationRate: { limit: 3, windowMs: 3_600_000 } });
    const clients = await Promise.all(Array.from({ length: 4 }, (_, i) => TestClient.create(`u${i}:1@a.example`, s.transport)));
    for (const c of clients.slice(0, 3)) expect(await codeOf(c.register())).toBe("ok");
    expect(await codeOf(clients[3]!.register())).toBe(Code.ResourceExhausted);
    expect(lastMessage).toMatch(/quota_exceeded/);
    expect(await s.db.store.getClient(clients[3]!.clientId)).toBeUndefined();
    expect(await codeOf(clients[0]!.register())).toBe("ok");
  });

  it("a client's Receive streams beyond the limit end the oldest with ResourceExhausted", async () => {
    const s = await start({ registration: { open: true }, maxReceiveStreamsPerClient: 2 });
    const c = await TestClient.create("dave:1@a.example", s.transport);
    await c.register();
    const stops: AbortController[] = [];
    const results: Promise<Code | "ended">[] = [];
    for (let i = 0; i < 3; i++) {
      const stop = new AbortController();
      stops.push(stop);
      results.push(
        (async () => {
          for await (const _ of c.api!.receive(0n, stop.signal)) void _;
        })().then(
          () => "ended" as const,
          (e: unknown) => ConnectError.from(e).code,
        ),
      );
      await waitFor(() => s.service.stats().streams + s.service.stats().superseded === i + 1, 10_000, `stream ${i}`);
    }
    expect(await results[0]).toBe(Code.ResourceExhausted);
    expect(s.service.stats()).toMatchObject({ streams: 2, superseded: 1 });
    for (const stop of stops) stop.abort();
    expect(await results[1]).toBe(Code.Canceled);
    expect(await results[2]).toBe(Code.Canceled);
    await waitFor(() => s.service.stats().streams === 0, 10_000, "streams closed");
  });

  it("a stream whose reader never reads holds one page, reads no further, and lets go when reset or abandoned", async () => {
    const s = await start({ registration: { open: true }, maxReceiveStreamsPerClient: 1 });
    const c = await TestClient.create("erin:1@a.example", s.transport);
    await c.register();
    const big = 2 * 1024 * 1024;
    await s.db.store.apply({
      ops: Array.from({ length: 4 }, () => ({ kind: "append" as const, queue: clientQueue(c.clientId), payload: new Uint8Array(big) })),
    });
    const session = await h2session(s.server.port, { ca: ca.ca });
    const receive = async () =>
      grpcStream(
        session,
        "/mimi.ds.v1.ClientService/Receive",
        grpcFrame(ReceiveRequestSchema, { auth: await c.api!.auth({ method: "receive", resumeAfter: 0n }), resumeAfter: 0n }),
      );
    const first = await receive();
    await waitFor(() => s.service.stats().bufferedBytes > 0, 10_000, "first page");
    // One entry larger than the page bound is the whole page; the stalled write holds it there.
    expect(s.service.stats()).toMatchObject({ streams: 1, bufferedBytes: big });
    // A second stream supersedes the first, which is stuck in a write: the server resets it.
    const second = await receive();
    expect(await closed(first)).toBe(8);
    await waitFor(() => s.service.stats().superseded === 1 && s.service.stats().bufferedBytes === big, 10_000, "first released");
    expect(s.service.stats()).toMatchObject({ streams: 1, peakStreamBytes: big });
    // The peer goes away with a write pending: the stream ends and lets its page go.
    session.destroy();
    await waitFor(() => s.service.stats().streams === 0, 10_000, "second ended");
    expect(s.service.stats().bufferedBytes).toBe(0);
    expect(second.closed).toBe(true);
    await waitFor(() => s.server.stats().streamingCalls === 0, 10_000, "no streaming call left");
  });
});
