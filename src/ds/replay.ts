// Accept-once keys (docs/security.md, issue 13 items 5 and 7): what the store
// records (recordRequest) so that the same thing is not accepted twice. The
// derivation is a stored format: a record written by one version must be
// found by the next (golden test in test/ds/replay.test.ts).
//
//   key = SHA-256(opaque label<V> || bytes)
//
// with label "MIMI DS send_message" over the application MLSMessage as
// received (the same ciphertext is the same message, whoever signs the request
// around it), and "MIMI DS registered_client" over the request's signature (a
// captured signed request replayed unchanged).
import { createHash } from "node:crypto";
import { encodeWith, opaqueV } from "../wire/index.js";

const utf8 = new TextEncoder();

function acceptOnceKey(label: string, bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(encodeWith(opaqueV, utf8.encode(label))).update(bytes).digest());
}

/** The record of an accepted send_message: its MLSMessage bytes. */
export const sentMessageKey = (mlsMessage: Uint8Array): Uint8Array => acceptOnceKey("MIMI DS send_message", mlsMessage);

/** The record of an accepted registered_client signature. */
export const clientSignatureKey = (signature: Uint8Array): Uint8Array => acceptOnceKey("MIMI DS registered_client", signature);
