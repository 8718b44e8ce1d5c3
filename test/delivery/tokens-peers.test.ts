// FanoutAuthToken scheme (binding, forgery, key file, rotation and revocation
// with grace) and the peers file validation.
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkToken,
  decodeClientAuthData,
  encodeClientAuthData,
  FANOUT_TOKEN_LENGTH,
  FanoutTokenKeys,
  loadLocalClient,
  loadPeers,
  newClientAuthData,
  parsePeers,
  PeersConfigError,
  revokeTokens,
  rotateFanoutToken,
  tokenAccepted,
} from "../../src/delivery/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { tempStore, type TempStore } from "./helpers.js";

let dir: string;
let ca: DevCa;
let db: TempStore;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mimi-ds-tokens-"));
  ca = await makeDevCa(["b.example"]);
  db = await tempStore();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await ca.cleanup();
  await db.cleanup();
});

describe("FanoutAuthToken", () => {
  it("is bound to its client and to the domain key", () => {
    const keys = FanoutTokenKeys.generate();
    const t = keys.issue("alice:1@a.example", 1_000);
    expect(t.length).toBe(FANOUT_TOKEN_LENGTH);
    expect(keys.verify("alice:1@a.example", t)).toEqual({ issuedAt: 1_000 });
    expect(keys.verify("bob:1@a.example", t)).toBeUndefined();
    expect(FanoutTokenKeys.generate().verify("alice:1@a.example", t)).toBeUndefined();
    for (let i = 0; i < t.length; i++) {
      const f = new Uint8Array(t);
      f[i]! ^= 1;
      expect(keys.verify("alice:1@a.example", f)).toBeUndefined();
    }
    expect(keys.verify("alice:1@a.example", t.subarray(1))).toBeUndefined();
  });

  it("keeps its key in a 0600 file shared by instances, and verifies with older keys after rotation", async () => {
    const file = join(dir, "fanout-token-key.json");
    const k1 = FanoutTokenKeys.open(file);
    const k2 = FanoutTokenKeys.open(file); // a second instance of the domain
    expect(((await stat(file)).mode & 0o777).toString(8)).toBe("600");
    const t = k1.issue("alice:1@a.example");
    expect(k2.verify("alice:1@a.example", t)).toBeDefined();
    // Rotation: a new key first, the old one kept.
    const f = JSON.parse(await readFile(file, "utf8"));
    f.keys.unshift({ key: Buffer.alloc(32, 7).toString("base64"), createdAt: Date.now() });
    await writeFile(file, JSON.stringify(f));
    const k3 = FanoutTokenKeys.open(file);
    expect(k3.verify("alice:1@a.example", t)).toBeDefined();
    const t3 = k3.issue("alice:1@a.example");
    expect(k1.verify("alice:1@a.example", t3)).toBeUndefined();
    await writeFile(file, "{}");
    expect(() => FanoutTokenKeys.open(file)).toThrow(/version/);
  });

  it("is revoked by rotation after a grace period; older revocations stay in force", () => {
    const keys = FanoutTokenKeys.generate();
    let auth = newClientAuthData(1, 1_000);
    expect(decodeClientAuthData(encodeClientAuthData(auth))).toEqual(auth);
    const old = keys.verify("c", keys.issue("c", 1_500))!;
    expect(tokenAccepted(auth, old, 2_000)).toBe(true);
    expect(tokenAccepted(auth, keys.verify("c", keys.issue("c", 500))!, 2_000)).toBe(false); // before registration
    auth = revokeTokens(auth, 2_000, 1_000);
    const fresh = keys.verify("c", keys.issue("c", 2_001))!;
    expect(tokenAccepted(auth, old, 2_500)).toBe(true); // grace
    expect(tokenAccepted(auth, old, 3_000)).toBe(false);
    expect(tokenAccepted(auth, fresh, 10_000)).toBe(true);
    auth = revokeTokens(auth, 4_000, 1_000);
    expect(tokenAccepted(auth, old, 4_500)).toBe(false); // revoked before, not revived by the new grace
    expect(tokenAccepted(auth, fresh, 4_500)).toBe(true);
    expect(tokenAccepted(auth, fresh, 5_000)).toBe(false);
  });

  it("rotates through the store", async () => {
    const keys = FanoutTokenKeys.generate();
    const id = "ivy:1@a.example";
    await db.store.apply({
      ops: [{ kind: "putClient", clientId: id, signaturePublicKey: new Uint8Array(32), authData: encodeClientAuthData(newClientAuthData(1, 1_000)) }],
    });
    const t1 = await rotateFanoutToken(db.store, keys, id, { now: 2_000 });
    const t2 = await rotateFanoutToken(db.store, keys, id, { now: 3_000, revokeGraceMs: 100 });
    const c = await loadLocalClient(db.store, id);
    expect(checkToken(keys, c, id, t1, 3_050)).toBe("ok");
    expect(checkToken(keys, c, id, t1, 3_100)).toBe("invalid_token");
    expect(checkToken(keys, c, id, t2, 3_100)).toBe("ok");
    expect(checkToken(keys, undefined, id, t2, 3_100)).toBe("unknown_client");
  });
});

describe("peers file", () => {
  const key = Buffer.alloc(32, 1).toString("base64");
  const good = () => [{ domain: "B.example", endpoint: "https://localhost:8443", ca: ca.caPath, dsSignatureKey: key }];

  it("loads and normalizes a valid file, with CA paths relative to it", async () => {
    const file = join(ca.dir, "peers.json");
    await writeFile(file, JSON.stringify([{ ...good()[0], ca: "ca.pem" }]));
    const peers = loadPeers(file);
    const p = peers.get("b.EXAMPLE")!;
    expect(p.domain).toBe("b.example");
    expect(p.caPath).toBe(ca.caPath);
    expect(p.ca.equals(ca.ca)).toBe(true);
    expect(Buffer.from(p.dsSignatureKey).toString("base64")).toBe(key);
    expect(peers.caBundle(ca.ca)).toHaveLength(1);
  });

  const cases: [string, () => unknown, RegExp][] = [
    ["not an array", () => ({}), /JSON array/],
    ["bad domain", () => [{ ...good()[0], domain: "not a domain" }], /\[0\]\.domain/],
    ["http endpoint", () => [{ ...good()[0], endpoint: "http://localhost:1" }], /\[0\]\.endpoint: want https/],
    ["endpoint with path", () => [{ ...good()[0], endpoint: "https://h:1/x" }], /\[0\]\.endpoint/],
    ["missing ca file", () => [{ ...good()[0], ca: "/nonexistent/ca.pem" }], /\[0\]\.ca: cannot read/],
    ["short key", () => [{ ...good()[0], dsSignatureKey: "AAAA" }], /\[0\]\.dsSignatureKey/],
    ["unknown field", () => [{ ...good()[0], extra: 1 }], /\[0\]\.extra: unknown field/],
    ["missing field", () => [{ domain: "b.example" }], /\[0\]\.endpoint: required/],
    ["duplicate", () => [good()[0], good()[0]], /configured twice/],
  ];
  it.each(cases)("rejects %s", (_name, json, msg) => {
    expect(() => parsePeers(json())).toThrow(PeersConfigError);
    expect(() => parsePeers(json())).toThrow(msg);
  });

  it("rejects a file that is not JSON or a CA file without a certificate", async () => {
    const file = join(dir, "bad.json");
    await writeFile(file, "[");
    expect(() => loadPeers(file)).toThrow(/not JSON/);
    const notPem = join(dir, "not.pem");
    await writeFile(notPem, "hello");
    expect(() => parsePeers([{ ...good()[0], ca: notPem }])).toThrow(/no PEM certificate/);
  });
});
