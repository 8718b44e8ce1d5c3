// The hub's own identity: the credential and signature keys it uses as an
// external sender of every group it hosts (DS-initiated proposals, draft
// Section 8), and the key that signs its DSFanoutRequests. Signature keys are
// per signature algorithm, because an external sender signs with the group's
// ciphersuite. The key file is created on first start (mode 0600) and must be
// shared by every instance of one domain.
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Credential, CiphersuiteImpl, CiphersuiteName } from "ts-mls";
import { getCiphersuiteFromName, getCiphersuiteImpl, ciphersuites } from "ts-mls";
import type { SignatureAlgorithm } from "ts-mls/crypto/signature.js";
import { signWithLabel, verifyWithLabel } from "ts-mls/crypto/signature.js";
import { encodeSignContent, SignatureLabel } from "../wire/index.js";

/** The ciphersuite whose signature scheme (Ed25519) signs DSFanoutRequests. */
export const FANOUT_SIGNATURE_SUITE: CiphersuiteName = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";

interface KeyPair {
  readonly publicKey: Uint8Array;
  readonly signKey: Uint8Array;
}

interface KeyFile {
  version: 1;
  keys: Partial<Record<SignatureAlgorithm, { publicKey: string; privateKey: string }>>;
}

const suiteImpls = new Map<CiphersuiteName, Promise<CiphersuiteImpl>>();
/** ts-mls ciphersuite implementations, made once per suite. */
export function suiteImpl(name: CiphersuiteName): Promise<CiphersuiteImpl> {
  let p = suiteImpls.get(name);
  if (p === undefined) {
    p = getCiphersuiteImpl(getCiphersuiteFromName(name));
    suiteImpls.set(name, p);
  }
  return p;
}

/** A ciphersuite name from its RFC 9420 number, or undefined. */
export function suiteName(id: number): CiphersuiteName | undefined {
  for (const [name, n] of Object.entries(ciphersuites)) if (n === id) return name as CiphersuiteName;
  return undefined;
}

/** PKCS#8 wrapping of a raw 32-byte Ed25519 private key (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

export class HubIdentity {
  /** A BasicCredential naming the DS domain, as the draft suggests (Section 8 TODO). */
  readonly credential: Credential;
  private readonly keys = new Map<SignatureAlgorithm, KeyPair>();
  private ed25519: KeyObject | undefined;

  private constructor(
    readonly domain: string,
    private readonly file: string | undefined,
    stored: KeyFile | undefined,
  ) {
    this.credential = { credentialType: "basic", identity: new TextEncoder().encode(domain) };
    for (const [alg, k] of Object.entries(stored?.keys ?? {}))
      this.keys.set(alg as SignatureAlgorithm, { publicKey: Buffer.from(k.publicKey, "base64"), signKey: Buffer.from(k.privateKey, "base64") });
  }

  /** Load the key file, creating it when missing. `file` undefined keeps keys in memory only (tests). */
  static async open(domain: string, file?: string): Promise<HubIdentity> {
    const stored = file !== undefined && existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as KeyFile) : undefined;
    const id = new HubIdentity(domain, file, stored);
    await id.keyPair(FANOUT_SIGNATURE_SUITE);
    return id;
  }

  /** The key pair for a suite's signature algorithm, generated (and saved) on first use. */
  async keyPair(suite: CiphersuiteName): Promise<KeyPair> {
    const alg = getCiphersuiteFromName(suite).signature;
    const have = this.keys.get(alg);
    if (have !== undefined) return have;
    const pair = await (await suiteImpl(suite)).signature.keygen();
    this.keys.set(alg, pair);
    this.save();
    return pair;
  }

  /** The hub's ExternalSender entry for groups of this suite (what creators put in `external_senders`). */
  async externalSender(suite: CiphersuiteName): Promise<{ signaturePublicKey: Uint8Array; credential: Credential }> {
    return { signaturePublicKey: (await this.keyPair(suite)).publicKey, credential: this.credential };
  }

  /** RFC 9420 SignWithLabel with the hub's key for this suite. */
  async sign(suite: CiphersuiteName, label: string, content: Uint8Array | readonly Uint8Array[]): Promise<Uint8Array> {
    const pair = await this.keyPair(suite);
    // Ed25519 (every fanout request): node:crypto with the key imported once, not per signature.
    if (getCiphersuiteFromName(suite).signature === "Ed25519") {
      // ts-mls keeps the key as PKCS#8 (48 bytes) or as the raw 32-byte seed, depending on its provider.
      this.ed25519 ??= createPrivateKey({
        key: pair.signKey.length === 32 ? Buffer.concat([ED25519_PKCS8_PREFIX, pair.signKey]) : Buffer.from(pair.signKey),
        format: "der",
        type: "pkcs8",
      });
      return nodeSign(null, encodeSignContent(label, content), this.ed25519);
    }
    const joined = content instanceof Uint8Array ? content : Buffer.concat(content);
    return signWithLabel(pair.signKey, label, joined, (await suiteImpl(suite)).signature);
  }

  /**
   * SignWithLabel(label, parts joined) with the fanout key (label
   * "DSFanoutRequest" unless told otherwise): the
   * SignContent is built in one buffer from the parts (a DSFanoutRequest's
   * head and its message), without joining them first.
   */
  signFanout(parts: readonly Uint8Array[], label: string = SignatureLabel.DSFanoutRequest): Promise<Uint8Array> {
    return this.sign(FANOUT_SIGNATURE_SUITE, label, parts);
  }

  /** Public key that verifies this hub's DSFanoutRequests (configured at its peers). */
  get fanoutPublicKey(): Uint8Array {
    return this.keys.get(getCiphersuiteFromName(FANOUT_SIGNATURE_SUITE).signature)!.publicKey;
  }

  private save(): void {
    if (this.file === undefined) return;
    const out: KeyFile = { version: 1, keys: {} };
    for (const [alg, k] of this.keys)
      out.keys[alg] = { publicKey: Buffer.from(k.publicKey).toString("base64"), privateKey: Buffer.from(k.signKey).toString("base64") };
    mkdirSync(dirname(this.file), { recursive: true, mode: 0o700 });
    writeFileSync(this.file, JSON.stringify(out, null, 2) + "\n", { mode: 0o600 });
  }
}

const fanoutKeys = new Map<string, KeyObject>();

/**
 * Verifies a DSFanoutRequest signature (over the parts joined) with a peer
 * hub's Ed25519 key, on the libuv threadpool: the guest goes on decoding
 * other requests meanwhile. Keys are imported once per peer key.
 */
export function verifyFanoutSignatureAsync(
  publicKey: Uint8Array,
  parts: readonly Uint8Array[],
  signature: Uint8Array,
  label: string = SignatureLabel.DSFanoutRequest,
): Promise<boolean> {
  const id = Buffer.from(publicKey).toString("base64url");
  let key = fanoutKeys.get(id);
  if (key === undefined) {
    if (publicKey.length !== 32) return Promise.resolve(false);
    key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: id }, format: "jwk" });
    if (fanoutKeys.size >= 256) fanoutKeys.clear();
    fanoutKeys.set(id, key);
  }
  const content = encodeSignContent(label, parts);
  return new Promise((resolve) => {
    try {
      nodeVerify(null, content, key, signature, (err, ok) => resolve(err === null && ok));
    } catch {
      resolve(false);
    }
  });
}

/** Verify a SignWithLabel signature made by a hub's fanout key. */
export async function verifyFanoutSignature(publicKey: Uint8Array, label: string, content: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const cs = await suiteImpl(FANOUT_SIGNATURE_SUITE);
  return verifyWithLabel(publicKey, label, content, signature, cs.signature);
}
