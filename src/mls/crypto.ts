// Crypto for the public engine: node:crypto for hashing and signature
// verification (synchronous, so the hot paths avoid promise churn), with the
// ts-mls implementation as fallback for algorithms node:crypto lacks.
import * as nodeCrypto from "node:crypto";
import type { CiphersuiteImpl, CiphersuiteName, CryptoProvider, Ciphersuite } from "ts-mls";
import { getCiphersuiteFromName, defaultCryptoProvider } from "ts-mls";
import type { Signature } from "ts-mls/crypto/signature.js";
import type { Hash } from "ts-mls/crypto/hash.js";
import { EngineError } from "./errors.js";

export type HashName = "sha256" | "sha384" | "sha512";
export type SigAlg = "Ed25519" | "Ed448" | "P256" | "P384" | "P521" | "ML-DSA-87";

// SubjectPublicKeyInfo prefixes: raw key bytes appended give a DER SPKI.
const SPKI_PREFIX: Partial<Record<SigAlg, Uint8Array>> = {
  Ed25519: Buffer.from("302a300506032b6570032100", "hex"),
  Ed448: Buffer.from("3043300506032b6571033a00", "hex"),
  P256: Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex"),
  P384: Buffer.from("3076301006072a8648ce3d020106052b81040022036200", "hex"),
  P521: Buffer.from("30819b301006072a8648ce3d020106052b8104002303818600", "hex"),
};
const RAW_KEY_LEN: Partial<Record<SigAlg, number>> = { Ed25519: 32, Ed448: 57, P256: 65, P384: 97, P521: 133 };
// ECDSA in MLS signs the message with the suite's hash (RFC 9420 5.1.2).
const ECDSA_HASH: Partial<Record<SigAlg, string>> = { P256: "sha256", P384: "sha384", P521: "sha512" };

/** Engine-side crypto for one cipher suite. */
export interface EngineCrypto {
  readonly suite: CiphersuiteName;
  readonly hashName: HashName;
  readonly hashLen: number;
  readonly sigAlg: SigAlg;
  hash(data: Uint8Array): Uint8Array;
  /** The same digest as a latin1 string: no Buffer per call, and compact (the tree's hash cache). */
  hashKey(data: Uint8Array): string;
  /** Hash of the concatenation of parts, without building it. */
  hashParts(...parts: Uint8Array[]): Uint8Array;
  /** Verify a raw signature (no label handling). */
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean>;
  /** Synchronous verify when node:crypto handles the algorithm; undefined otherwise. */
  verifySync?: (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean;
  /**
   * A batch of verifications running in parallel (threadpool when node:crypto
   * handles the algorithm). `cacheKeys`: keep the KeyObjects for later
   * messages (members' keys); off for one-off key sets such as a whole tree.
   */
  verifyBatch(opts?: { cacheKeys?: boolean }): VerifyBatch;
}

const EC_CURVE: Partial<Record<SigAlg, string>> = { P256: "prime256v1", P384: "secp384r1", P521: "secp521r1" };

/**
 * DER SubjectPublicKeyInfo for a raw MLS signature key. RFC 9420 wants ECDSA
 * keys uncompressed; compressed points (as some libraries emit) are accepted
 * by decompressing them.
 */
function spki(alg: SigAlg, raw: Uint8Array): Buffer | undefined {
  const prefix = SPKI_PREFIX[alg];
  if (prefix === undefined) return undefined;
  const curve = EC_CURVE[alg];
  if (curve !== undefined && raw.length === ((RAW_KEY_LEN[alg]! - 1) >> 1) + 1 && (raw[0] === 2 || raw[0] === 3)) {
    try {
      raw = nodeCrypto.ECDH.convertKey(raw, curve, undefined, undefined, "uncompressed") as Buffer;
    } catch {
      return undefined;
    }
  }
  if (raw.length !== RAW_KEY_LEN[alg]) return undefined;
  return Buffer.concat([prefix, raw]);
}

// EdDSA keys are imported as JWK: OpenSSL 3 builds the key straight from the
// raw bytes (~10 us), where parsing the same key as DER SPKI takes ~100 us.
const JWK_CURVE: Partial<Record<SigAlg, string>> = { Ed25519: "Ed25519", Ed448: "Ed448" };

type VerifyKey = nodeCrypto.KeyObject | nodeCrypto.JsonWebKeyInput;

/** An EdDSA key as a JWK input (crypto.verify takes it as is); undefined for other algorithms or a bad length. */
function jwkInput(alg: SigAlg, raw: Uint8Array): nodeCrypto.JsonWebKeyInput | undefined {
  const crv = JWK_CURVE[alg];
  if (crv === undefined || raw.length !== RAW_KEY_LEN[alg]) return undefined;
  return { key: { kty: "OKP", crv, x: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("base64url") }, format: "jwk" };
}

function createKeyObject(alg: SigAlg, raw: Uint8Array): nodeCrypto.KeyObject | undefined {
  try {
    if (JWK_CURVE[alg] !== undefined) {
      const jwk = jwkInput(alg, raw);
      return jwk === undefined ? undefined : nodeCrypto.createPublicKey(jwk);
    }
    const der = spki(alg, raw);
    return der === undefined ? undefined : nodeCrypto.createPublicKey({ key: der, format: "der", type: "spki" });
  } catch {
    return undefined;
  }
}

const keyCache = new Map<string, nodeCrypto.KeyObject>();
/** KeyObject for a raw key, cached: the same member keys verify many messages. */
function publicKeyObject(alg: SigAlg, raw: Uint8Array): nodeCrypto.KeyObject | undefined {
  const k = alg + Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("latin1");
  let ko = keyCache.get(k);
  if (ko === undefined) {
    ko = createKeyObject(alg, raw);
    if (ko === undefined) return undefined;
    // Small bounded cache (batches, e.g. a seeded tree's leaves, bypass it).
    if (keyCache.size > 4096) keyCache.clear();
    keyCache.set(k, ko);
  }
  return ko;
}

function nodeVerify(alg: SigAlg, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const key = publicKeyObject(alg, publicKey);
  if (key === undefined) return false;
  try {
    const h = ECDSA_HASH[alg];
    return nodeCrypto.verify(h ?? null, message, key, signature);
  } catch {
    return false;
  }
}

/** Threadpool verification (callback form of crypto.verify): lets a batch use every core. */
function nodeVerifyAsync(alg: SigAlg, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  return new Promise((resolve) => nodeVerifyCallback(alg, publicKeyObject(alg, publicKey), message, signature, resolve));
}

function nodeVerifyCallback(alg: SigAlg, key: VerifyKey | undefined, message: Uint8Array, signature: Uint8Array, done: (ok: boolean) => void): void {
  if (key === undefined) return done(false);
  try {
    nodeCrypto.verify(ECDSA_HASH[alg] ?? null, message, key, signature, (err, ok) => done(err === null && ok));
  } catch {
    done(false);
  }
}

/**
 * Many verifications in flight on the libuv threadpool, one callback each and
 * one promise for the lot. Jobs start on `add`, so a caller can go on parsing
 * while earlier ones run; `failures()` resolves once every job is done.
 */
export interface VerifyBatch {
  /** Start one verification; the caller may reuse the message's memory once this returns. */
  add(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array, tag: number): void;
  /** Tags of the signatures that did not verify, ascending. */
  failures(): Promise<number[]>;
}

function nodeVerifyBatch(alg: SigAlg, cacheKeys: boolean): VerifyBatch {
  let pending = 0;
  let closed = false;
  let finish: (() => void) | undefined;
  const failed: number[] = [];
  const done = (tag: number) => (ok: boolean) => {
    if (!ok) failed.push(tag);
    if (--pending === 0 && closed) finish?.();
  };
  return {
    add(pk, m, sig, tag) {
      pending++;
      // Uncached, an EdDSA key goes in as JWK (no KeyObject per key). node:crypto
      // copies message and signature for an async job, so m may be reused.
      const key = cacheKeys ? publicKeyObject(alg, pk) : JWK_CURVE[alg] !== undefined ? jwkInput(alg, pk) : createKeyObject(alg, pk);
      nodeVerifyCallback(alg, key, m, sig, done(tag));
    },
    failures() {
      closed = true;
      const all = pending === 0 ? Promise.resolve() : new Promise<void>((r) => (finish = r));
      return all.then(() => failed.sort((a, b) => a - b));
    },
  };
}

/** Batch over an async verify function (algorithms node:crypto lacks). */
function promiseVerifyBatch(verify: EngineCrypto["verify"]): VerifyBatch {
  const jobs: Promise<number | undefined>[] = [];
  return {
    add(pk, m, sig, tag) {
      jobs.push(verify(pk, m.slice(), sig).then((ok) => (ok ? undefined : tag), () => tag));
    },
    async failures() {
      const r = await Promise.all(jobs);
      return r.filter((t): t is number => t !== undefined).sort((a, b) => a - b);
    },
  };
}

// One-shot digest (Node >= 20.12): no Hash object per call, which matters for the ~2N hashes of a tree.
const oneShot = (nodeCrypto as { hash?: OneShot }).hash;
interface OneShot {
  (alg: string, data: Uint8Array, enc: "buffer"): Buffer;
  (alg: string, data: Uint8Array, enc: "latin1"): string;
}

function hashNameOf(cs: Ciphersuite): HashName {
  return cs.hash === "SHA-256" ? "sha256" : cs.hash === "SHA-384" ? "sha384" : "sha512";
}

const engineCryptoCache = new Map<CiphersuiteName, Promise<EngineCrypto>>();

/** EngineCrypto for a suite; node:crypto when possible, ts-mls otherwise. */
export function engineCrypto(suite: CiphersuiteName): Promise<EngineCrypto> {
  if (typeof suite !== "string") return Promise.reject(new EngineError("unsupported_ciphersuite", `cipher suite ${String(suite)}`));
  let p = engineCryptoCache.get(suite);
  if (p === undefined) {
    p = makeEngineCrypto(suite);
    engineCryptoCache.set(suite, p);
    p.catch(() => engineCryptoCache.delete(suite));
  }
  return p;
}

async function makeEngineCrypto(suite: CiphersuiteName): Promise<EngineCrypto> {
  const cs = getCiphersuiteFromName(suite);
  const hashName = hashNameOf(cs);
  const hashLen = hashName === "sha256" ? 32 : hashName === "sha384" ? 48 : 64;
  const sigAlg = cs.signature as SigAlg;
  const hash = (data: Uint8Array): Uint8Array => {
    if (oneShot !== undefined) {
      const d = oneShot(hashName, data, "buffer");
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    }
    return new Uint8Array(nodeCrypto.createHash(hashName).update(data).digest());
  };
  const hashKey = (data: Uint8Array): string =>
    oneShot !== undefined ? oneShot(hashName, data, "latin1") : nodeCrypto.createHash(hashName).update(data).digest("latin1");
  const hashParts = (...parts: Uint8Array[]): Uint8Array => {
    const h = nodeCrypto.createHash(hashName);
    for (const p of parts) h.update(p);
    return new Uint8Array(h.digest());
  };
  if (SPKI_PREFIX[sigAlg] !== undefined) {
    const verifySync = (pk: Uint8Array, m: Uint8Array, s: Uint8Array) => nodeVerify(sigAlg, pk, m, s);
    return {
      suite,
      hashName,
      hashLen,
      sigAlg,
      hash,
      hashKey,
      hashParts,
      verifySync,
      verify: (pk, m, s) => nodeVerifyAsync(sigAlg, pk, m, s),
      verifyBatch: (o) => nodeVerifyBatch(sigAlg, o?.cacheKeys ?? false),
    };
  }
  // Fallback (e.g. ML-DSA): ts-mls signature implementation, if its optional package is installed.
  const { makeNobleSignatureImpl } = await import("ts-mls/crypto/implementation/default/makeNobleSignatureImpl.js");
  let sig: Signature;
  try {
    sig = await makeNobleSignatureImpl(cs.signature);
  } catch (e) {
    throw new EngineError("unsupported_ciphersuite", `${suite}: ${(e as Error).message}`);
  }
  const verify = (pk: Uint8Array, m: Uint8Array, s: Uint8Array) => sig.verify(pk, m, s);
  return { suite, hashName, hashLen, sigAlg, hash, hashKey, hashParts, verify, verifyBatch: () => promiseVerifyBatch(verify) };
}

/** A ts-mls CryptoProvider whose hash and signature verification run on node:crypto. */
export const nodeCryptoProvider: CryptoProvider = {
  async getCiphersuiteImpl(cs: Ciphersuite): Promise<CiphersuiteImpl> {
    const base = await defaultCryptoProvider.getCiphersuiteImpl(cs);
    const hashName = hashNameOf(cs);
    const alg = cs.signature as SigAlg;
    const hash: Hash = {
      async digest(data) {
        return new Uint8Array(nodeCrypto.createHash(hashName).update(data).digest());
      },
      async mac(key, data) {
        return new Uint8Array(nodeCrypto.createHmac(hashName, key).update(data).digest());
      },
      async verifyMac(key, mac, data) {
        const m = nodeCrypto.createHmac(hashName, key).update(data).digest();
        return m.length === mac.length && nodeCrypto.timingSafeEqual(m, mac);
      },
    };
    const signature: Signature =
      SPKI_PREFIX[alg] === undefined
        ? base.signature
        : {
            sign: (k, m) => base.signature.sign(k, m),
            keygen: () => base.signature.keygen(),
            async verify(pk, m, s) {
              return nodeVerify(alg, pk, m, s);
            },
          };
    return { ...base, hash, signature };
  },
};
