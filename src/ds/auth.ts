// DSAuthData checks (draft Section 6.1). The signed bytes are cut from the
// request as received: ClientSignatureTBS is the request's version and body
// followed by the sender index, so nothing is re-encoded.
import { engineCrypto, memberAt, type GroupState, type Member } from "../mls/index.js";
import type { WriteOp } from "../store/port.js";
import {
  clientIdCodec,
  dsAuthDataCodec,
  DSErrorCode,
  encodeSignContent,
  encodeWith,
  opaqueV,
  SignatureLabel,
  uint32,
  uint64,
  type DSRequest,
} from "../wire/index.js";
import { isLocal, shown } from "./admission.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";
import { suiteName } from "./hub-identity.js";
import { clientSignatureKey } from "./replay.js";

/** The request's version + body bytes: everything before the DSAuthData. */
function signedPrefix(req: DSRequest, raw: Uint8Array): Uint8Array {
  const authLen = encodeWith(dsAuthDataCodec, req.authenticationData).length;
  return raw.subarray(0, raw.length - authLen);
}

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
};

/**
 * Authenticate a member of the group: DSAuthData must be client_signature, the
 * leaf must be occupied, and the signature must verify with its key.
 */
export async function authenticateMember(req: DSRequest, raw: Uint8Array, state: GroupState): Promise<Member> {
  const auth = req.authenticationData;
  if (auth.authType !== "client_signature")
    failWith(DSErrorCode.authentication_failed, `this request needs a client_signature (DSAuthData), not ${auth.authType}`);
  const member = memberAt(state, auth.senderIndex);
  if (member === undefined) failWith(DSErrorCode.permission_denied, `leaf ${auth.senderIndex} is not a member of the group`);
  const tbs = concat(signedPrefix(req, raw), encodeWith(uint32, auth.senderIndex));
  const ok = await state.crypto.verify(member.signaturePublicKey, encodeSignContent(SignatureLabel.DSRequest, tbs), auth.signature);
  if (!ok) failWith(DSErrorCode.authentication_failed, `the client_signature does not verify with the key of leaf ${auth.senderIndex}`);
  return member;
}

/** Verify a joiner_signature with the signature key of the KeyPackage the joiner was added with. */
export async function authenticateJoiner(req: DSRequest, raw: Uint8Array, state: Pick<GroupState, "crypto">, signatureKey: Uint8Array): Promise<void> {
  const auth = req.authenticationData;
  if (auth.authType !== "joiner_signature") failWith(DSErrorCode.authentication_failed, "this request needs a joiner_signature (DSAuthData)");
  const tbs = concat(signedPrefix(req, raw), encodeWith(opaqueV, auth.keyPackageRef));
  const ok = await state.crypto.verify(signatureKey, encodeSignContent(SignatureLabel.DSJoinerRequest, tbs), auth.signature);
  if (!ok) failWith(DSErrorCode.authentication_failed, "the joiner_signature does not verify with the KeyPackage's signature key");
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A registered client of this DS, authenticated by a registered_client signature. */
export interface RegisteredRequester {
  readonly clientId: string;
  /** Put into a store batch before acting: a second use of the same signature is a duplicate batch. */
  readonly acceptOnce: WriteOp;
}

/**
 * Authenticate a registered_client DSAuthData: the client is registered at
 * this DS, the timestamp is within the policy's clock skew, and the signature
 * verifies with the registered key over RegisteredClientSignatureTBS (the
 * request's version and body bytes as received, then client_id and
 * timestamp_ms). The returned record makes the signature single-use.
 */
export async function authenticateRegisteredClient(ctx: DSContext, req: DSRequest, raw: Uint8Array): Promise<RegisteredRequester> {
  const auth = req.authenticationData;
  if (auth.authType !== "registered_client") failWith(DSErrorCode.authentication_failed, `this request needs a registered_client signature (DSAuthData), not ${auth.authType}`);
  let clientId: string;
  try {
    clientId = utf8.decode(auth.clientId);
  } catch {
    return failWith(DSErrorCode.authentication_failed, "the registered_client client_id is not UTF-8");
  }
  if (!isLocal(ctx, clientId))
    failWith(DSErrorCode.authentication_failed, `${shown(clientId)} is not a client of ${ctx.config.domain}; a client asks through its own DS`);
  const skew = ctx.config.policy.keyPackages.maxClockSkewMs;
  const ts = Number(auth.timestampMs);
  const now = ctx.config.now();
  if (!(Math.abs(ts - now) <= skew))
    failWith(DSErrorCode.authentication_failed, `the registered_client timestamp is ${Math.round((ts - now) / 1000)} s off this DS's clock (at most ${skew / 1000} s)`);
  const reg = ctx.localClients === undefined ? undefined : await ctx.localClients.registration(clientId);
  const suite = reg === undefined ? undefined : suiteName(reg.cipherSuite);
  if (reg === undefined || suite === undefined) return failWith(DSErrorCode.authentication_failed, `${shown(clientId)} is not registered at ${ctx.config.domain}`);
  const tbs = concat(concat(signedPrefix(req, raw), encodeWith(clientIdCodec, auth.clientId)), encodeWith(uint64, auth.timestampMs));
  const crypto = await engineCrypto(suite);
  if (!(await crypto.verify(reg.signaturePublicKey, encodeSignContent(SignatureLabel.DSRegisteredClientRequest, tbs), auth.signature)))
    failWith(DSErrorCode.authentication_failed, `the registered_client signature does not verify with the key ${shown(clientId)} registered`);
  return { clientId, acceptOnce: { kind: "recordRequest", key: clientSignatureKey(auth.signature), expiresAt: ts + skew + 1 } };
}
