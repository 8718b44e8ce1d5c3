// Provider authentication for Register (docs/security.md, "Registration"):
// a new binding of a client id to a signature key needs a
// RegistrationCredential, the provider identity system's Ed25519 signature
// over {client_id, signature_public_key, not_before, not_after}, made with an
// issuer key whose public half the operator gives to `serve`
// (--registration-key). `mimi-ds registration-credential` issues one.
// Without a configured key the DS registers nobody, unless the operator asks
// for the development mode (--open-registration: trust on first use).
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import {
  SignatureLabel,
  WireDecodeError,
  decodeRegistrationCredential,
  encodeRegistrationCredential,
  encodeRegistrationCredentialTBS,
  encodeSignContent,
  type RegistrationCredential,
  type RegistrationCredentialTBS,
} from "../wire/index.js";

export class RegistrationKeyError extends Error {
  override readonly name = "RegistrationKeyError";
}

/** Every "PUBLIC KEY" block of a PEM file as an Ed25519 KeyObject (several: key rotation). */
export function parseIssuerPublicKeys(pem: string): KeyObject[] {
  const blocks = pem.match(/-----BEGIN PUBLIC KEY-----[^-]+-----END PUBLIC KEY-----/g) ?? [];
  if (blocks.length === 0) throw new RegistrationKeyError("no PUBLIC KEY block in the registration key file");
  return blocks.map((b) => {
    const key = createPublicKey(b);
    if (key.asymmetricKeyType !== "ed25519") throw new RegistrationKeyError(`registration keys are Ed25519, not ${key.asymmetricKeyType}`);
    return key;
  });
}

export function parseIssuerPrivateKey(pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== "ed25519") throw new RegistrationKeyError(`registration keys are Ed25519, not ${key.asymmetricKeyType}`);
  return key;
}

/** A new issuer key pair as PEM (PKCS#8 private, SPKI public). */
export function generateIssuerKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/** A TLS-serialized RegistrationCredential signed by `issuer`. */
export function issueRegistrationCredential(issuer: KeyObject, tbs: RegistrationCredentialTBS): Uint8Array {
  const content = encodeSignContent(SignatureLabel.DSRegistration, encodeRegistrationCredentialTBS(tbs));
  const signature = new Uint8Array(sign(null, content, issuer));
  return encodeRegistrationCredential({ ...tbs, signature });
}

export type CredentialCheck =
  | { readonly ok: true; readonly credential: RegistrationCredential }
  | { readonly ok: false; readonly reason: string };

const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Whether `bytes` is a RegistrationCredential, signed by one of `issuers`,
 * for exactly this client id and key, valid at `now` (ms).
 */
export function checkRegistrationCredential(
  bytes: Uint8Array,
  issuers: readonly KeyObject[],
  clientId: Uint8Array,
  signaturePublicKey: Uint8Array,
  now: number,
): CredentialCheck {
  let c: RegistrationCredential;
  try {
    c = decodeRegistrationCredential(bytes, { maxMessageSize: 4096 });
  } catch (err) {
    if (err instanceof WireDecodeError) return { ok: false, reason: `registration_credential does not decode: ${err.message}` };
    throw err;
  }
  const content = encodeSignContent(SignatureLabel.DSRegistration, encodeRegistrationCredentialTBS(c));
  if (!issuers.some((k) => verify(null, content, k, c.signature))) {
    return { ok: false, reason: "registration_credential is not signed by a configured issuer key" };
  }
  if (!bytesEqual(c.clientId, clientId)) return { ok: false, reason: "registration_credential names another client id" };
  if (!bytesEqual(c.signaturePublicKey, signaturePublicKey)) return { ok: false, reason: "registration_credential names another signature key" };
  const t = BigInt(Math.floor(now));
  if (t < c.notBeforeMs) return { ok: false, reason: "registration_credential is not valid yet" };
  if (t > c.notAfterMs) return { ok: false, reason: "registration_credential has expired" };
  return { ok: true, credential: c };
}
