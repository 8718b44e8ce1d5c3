// Shared pieces of the delivery tests: real SQLite stores in temp dirs, real
// ts-mls clients, KeyPackages and application messages, a local client SDK.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createApplicationMessage,
  createGroup,
  defaultCapabilities,
  defaultLifetime,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  type CiphersuiteImpl,
  type ClientState,
  type Extension,
  type KeyPackage,
  type Lifetime,
} from "ts-mls";
import { signKeyPackage } from "ts-mls/keyPackage.js";
import { createDSTransport, type DSTransport } from "../../src/client/transport.js";
import { LocalClientApi } from "../../src/client/local.js";
import { nodeCryptoProvider } from "../../src/mls/crypto.js";
import { openStore, type Store } from "../../src/store/index.js";
import {
  decodeFanoutAuthToken,
  encodeMLSMessage,
  makeFanoutAuthExtension,
  makeLastResortExtension,
} from "../../src/wire/index.js";

export const SUITE = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519" as const;
export const SUITE_ID = 1;

let impl: Promise<CiphersuiteImpl> | undefined;
export function suite(): Promise<CiphersuiteImpl> {
  impl ??= getCiphersuiteImpl(getCiphersuiteFromName(SUITE), nodeCryptoProvider);
  return impl;
}

export interface TempStore {
  readonly store: Store;
  readonly dir: string;
  cleanup(): Promise<void>;
}

export async function tempStore(): Promise<TempStore> {
  const dir = await mkdtemp(join(tmpdir(), "mimi-ds-delivery-"));
  const store = await openStore(dir + "/");
  return {
    store,
    dir,
    cleanup: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function dsTransport(url: string, ca: Buffer): DSTransport {
  return createDSTransport({ baseUrl: url, ca });
}

const te = new TextEncoder();

/** A real MLS client identity of a DS, with the SDK for its ClientService. */
export class TestClient {
  /** The token bytes (inside FanoutAuthToken) of the last Register. */
  token: Uint8Array | undefined;

  private constructor(
    readonly clientId: string,
    readonly sig: { publicKey: Uint8Array; signKey: Uint8Array },
    readonly cs: CiphersuiteImpl,
    readonly api: LocalClientApi | undefined,
  ) {}

  static async create(clientId: string, transport?: DSTransport, opts: { now?: () => number } = {}): Promise<TestClient> {
    const cs = await suite();
    const sig = await cs.signature.keygen();
    const api =
      transport !== undefined
        ? new LocalClientApi(transport, { clientId, signaturePrivateKey: sig.signKey, signature: cs.signature }, opts)
        : undefined;
    return new TestClient(clientId, sig, cs, api);
  }

  /** The same identity (key) talking through another clock or transport. */
  with(transport: DSTransport, opts: { now?: () => number } = {}): TestClient {
    const api = new LocalClientApi(transport, { clientId: this.clientId, signaturePrivateKey: this.sig.signKey, signature: this.cs.signature }, opts);
    const c = new TestClient(this.clientId, this.sig, this.cs, api);
    c.token = this.token;
    return c;
  }

  async register(registrationCredential?: Uint8Array): Promise<Uint8Array> {
    const tls = await this.api!.register(this.sig.publicKey, SUITE_ID, registrationCredential !== undefined ? { registrationCredential } : {});
    this.token = decodeFanoutAuthToken(tls).token;
    return this.token;
  }

  /** A KeyPackage as the TLS-serialized MLSMessage the upload RPC wants. */
  async keyPackage(
    o: {
      token?: Uint8Array | null;
      lastResort?: boolean;
      lifetime?: Lifetime;
      credentialId?: string;
      sig?: { publicKey: Uint8Array; signKey: Uint8Array };
      tamper?: (kp: KeyPackage) => KeyPackage;
      /** Sign the KeyPackage again after tampering (so only the inner part is bad). */
      resign?: boolean;
    } = {},
  ): Promise<{ bytes: Uint8Array; keyPackage: KeyPackage }> {
    const ext: Extension[] = [];
    const token = o.token === undefined ? this.token : o.token;
    if (token !== null && token !== undefined) ext.push(makeFanoutAuthExtension({ token }));
    if (o.lastResort === true) ext.push(makeLastResortExtension());
    const cred = { credentialType: "basic" as const, identity: te.encode(o.credentialId ?? this.clientId) };
    const { publicPackage } = await generateKeyPackageWithKey(cred, defaultCapabilities(), o.lifetime ?? defaultLifetime, ext, o.sig ?? this.sig, this.cs);
    let kp = o.tamper ? o.tamper(publicPackage) : publicPackage;
    if (o.resign === true) kp = await signKeyPackage(kp, (o.sig ?? this.sig).signKey, this.cs.signature);
    return { bytes: encodeMLSMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: kp }), keyPackage: kp };
  }
}

/** A one-member ts-mls group whose member writes real application messages (MLSMessage bytes). */
export class MessageSource {
  private constructor(
    private state: ClientState,
    private readonly cs: CiphersuiteImpl,
    readonly groupId: Uint8Array,
  ) {}

  static async create(name = "carol:1@b.example"): Promise<MessageSource> {
    const cs = await suite();
    const sig = await cs.signature.keygen();
    const { publicPackage, privatePackage } = await generateKeyPackageWithKey(
      { credentialType: "basic", identity: te.encode(name) },
      defaultCapabilities(),
      defaultLifetime,
      [],
      sig,
      cs,
    );
    const groupId = te.encode("group-" + Math.random().toString(16).slice(2));
    return new MessageSource(await createGroup(groupId, publicPackage, privatePackage, [], cs), cs, groupId);
  }

  async next(text: string): Promise<Uint8Array> {
    const r = await createApplicationMessage(this.state, te.encode(text), this.cs);
    this.state = r.newState;
    return encodeMLSMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage: r.privateMessage });
  }
}

export async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs = 15_000, what = "condition"): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const b64 = (b: Uint8Array): string => Buffer.from(b).toString("base64");
export const text = (b: Uint8Array): string => new TextDecoder().decode(b);
