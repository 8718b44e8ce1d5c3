// One line for an operator command whose RPC failed: the DS's own error (code
// name, number and sentence) when the server sent one, else what went wrong
// on the way in words that say what to check (nothing listening, a name that
// does not resolve, a certificate the --ca does not vouch for, ...).
import { Code, ConnectError } from "@connectrpc/connect";
import { codeName } from "../server/logging.js";
import { DSRequestError } from "../client/errors.js";

/** A failed remote call, already described; the command exits 1 with `message`. */
export class RemoteError extends Error {
  override readonly name = "RemoteError";
}

const tlsHints: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "is not issued by the CA given with --ca",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "is not issued by the CA given with --ca",
  SELF_SIGNED_CERT_IN_CHAIN: "is not issued by the CA given with --ca",
  DEPTH_ZERO_SELF_SIGNED_CERT: "is self-signed and not the one given with --ca",
  CERT_HAS_EXPIRED: "has expired",
  CERT_NOT_YET_VALID: "is not valid yet (check the clocks)",
  ERR_TLS_CERT_ALTNAME_INVALID: "does not name the endpoint's host (its subjectAltName lacks it)",
};

function causeCode(err: ConnectError): string | undefined {
  for (let c: unknown = err.cause; c !== undefined && c !== null; c = (c as { cause?: unknown }).cause) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** The sentence for a failed call to `endpoint`. */
export function describeRpcError(err: unknown, endpoint: string): string {
  if (!(err instanceof ConnectError)) return `${endpoint}: ${err instanceof Error ? err.message : String(err)}`;
  let ds: DSRequestError | undefined;
  try {
    ds = DSRequestError.fromConnectError(err);
  } catch (e) {
    return `${endpoint} answered ${codeName(err.code)} with a DS error detail that does not decode: ${(e as Error).message}`;
  }
  if (ds !== undefined) return `${endpoint} refused: ${ds.codeName} (DS error ${ds.code}): ${ds.dsMessage}${ds.currentEpoch !== undefined ? ` (current epoch ${ds.currentEpoch})` : ""}`;
  const cause = causeCode(err);
  const host = hostOf(endpoint);
  switch (cause) {
    case "ECONNREFUSED":
      return `nothing listens at ${endpoint} (connection refused)`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `${host} does not resolve (${cause}): check --endpoint`;
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `${endpoint} cannot be reached (${cause})`;
    case "ECONNRESET":
    case "EPIPE":
      return `${endpoint} closed the connection (${cause}): is it a TLS gRPC server? A peer that refuses our client certificate also hangs up`;
  }
  if (cause !== undefined && tlsHints[cause] !== undefined) return `TLS: the certificate of ${endpoint} ${tlsHints[cause]} (${cause})`;
  if (cause === "ERR_SSL_WRONG_VERSION_NUMBER" || /wrong version number/i.test(err.rawMessage)) {
    return `${endpoint} does not speak TLS (is it a plain-HTTP port?)`;
  }
  if (err.code === Code.DeadlineExceeded) return `no answer from ${endpoint} in time (${err.rawMessage})`;
  return `${endpoint} answered ${codeName(err.code)}: ${err.rawMessage}`;
}

function hostOf(endpoint: string): string {
  try {
    return new URL(endpoint).hostname;
  } catch {
    return endpoint;
  }
}
