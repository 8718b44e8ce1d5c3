// DSAuthData checks (draft Section 6.1). The signed bytes are cut from the
// request as received: ClientSignatureTBS is the request's version and body
// followed by the sender index, so nothing is re-encoded.
import { memberAt, type GroupState, type Member } from "../mls/index.js";
import {
  dsAuthDataCodec,
  DSErrorCode,
  encodeSignContent,
  encodeWith,
  opaqueV,
  SignatureLabel,
  uint32,
  type DSRequest,
} from "../wire/index.js";
import { failWith } from "./errors.js";

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
