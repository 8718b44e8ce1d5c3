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
  /** Hash of the concatenation of parts, without building it. */
  hashParts(...parts: Uint8Array[]): Uint8Array;
  /** Verify a raw signature (no label handling). */
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean>;
  /** Synchronous verify when node:crypto handles the algorithm; undefined otherwise. */
  verifySync?: (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean;
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

const keyCache = new Map<string, nodeCrypto.KeyObject>();
function publicKeyObject(alg: SigAlg, raw: Uint8Array): nodeCrypto.KeyObject | undefined {
  const der = spki(alg, raw);
  if (der === undefined) return undefined;
  const k = der.toString("latin1");
  let ko = keyCache.get(k);
  if (ko === undefined) {
    try {
      ko = nodeCrypto.createPublicKey({ key: der, format: "der", type: "spki" });
    } catch {
      return undefined;
    }
    // Small bounded cache: the same member keys verify many messages.
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
  // The cached KeyObject: parsing the DER key on every call costs ~250 us of main-thread time (OpenSSL 3).
  const key = publicKeyObject(alg, publicKey);
  if (key === undefined) return Promise.resolve(false);
  return new Promise((resolve) => {
    try {
      nodeCrypto.verify(ECDSA_HASH[alg] ?? null, message, key, signature, (err, ok) => resolve(err === null && ok));
    } catch {
      resolve(false);
    }
  });
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
    const h = nodeCrypto.createHash(hashName);
    h.update(data);
    return new Uint8Array(h.digest());
  };
  const hashParts = (...parts: Uint8Array[]): Uint8Array => {
    const h = nodeCrypto.createHash(hashName);
    for (const p of parts) h.update(p);
    return new Uint8Array(h.digest());
  };
  if (SPKI_PREFIX[sigAlg] !== undefined) {
    const verifySync = (pk: Uint8Array, m: Uint8Array, s: Uint8Array) => nodeVerify(sigAlg, pk, m, s);
    return { suite, hashName, hashLen, sigAlg, hash, hashParts, verifySync, verify: (pk, m, s) => nodeVerifyAsync(sigAlg, pk, m, s) };
  }
  // Fallback (e.g. ML-DSA): ts-mls signature implementation, if its optional package is installed.
  const { makeNobleSignatureImpl } = await import("ts-mls/crypto/implementation/default/makeNobleSignatureImpl.js");
  let sig: Signature;
  try {
    sig = await makeNobleSignatureImpl(cs.signature);
  } catch (e) {
    throw new EngineError("unsupported_ciphersuite", `${suite}: ${(e as Error).message}`);
  }
  return { suite, hashName, hashLen, sigAlg, hash, hashParts, verify: (pk, m, s) => sig.verify(pk, m, s) };
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
