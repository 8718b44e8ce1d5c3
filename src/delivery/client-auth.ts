// ClientAuth of ClientService calls (docs/protocol.md "Local clients",
// docs/security.md "ClientAuth"): the signature covers the client id, the
// time, a nonce, the method and a digest of the request's fields, and each
// (client id, nonce) is accepted once while the timestamp is fresh.
//
// The replay cache lives in the store, not in memory: every instance sharing
// the store sees it, and it survives a restart. It uses the store's
// fixed-window counter (`rateLimit`, one row per key, removed by
// purgeExpired) with a limit of 1 and a window keyed by the auth's own
// timestamp (below), so the same auth always lands in the same window.
import { Code, ConnectError } from "@connectrpc/connect";
import type { CiphersuiteName } from "ts-mls";
import type { ClientAuth } from "../../gen/mimi/ds/v1/client_pb.js";
import { clientRequestDigest } from "../client/sign.js";
import { domainOf } from "../mls/index.js";
import type { Store } from "../store/port.js";
import { SignatureLabel, encodeClientAuthTBS, type ClientRequestFields } from "../wire/index.js";
import { clientRpcNameOf, verifyLabeled } from "./suites.js";

/** How far a ClientAuth timestamp may be from our clock. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 5 * 60_000;
export const MIN_NONCE_LENGTH = 16;
export const MAX_NONCE_LENGTH = 64;
/** Longest client id accepted (bytes of UTF-8). */
export const MAX_CLIENT_ID_LENGTH = 1024;

const utf8 = new TextDecoder("utf-8", { fatal: true });

export interface ClientAuthOptions {
  readonly domain: string;
  readonly store: Store;
  readonly now: () => number;
  readonly maxClockSkewMs: number;
}

export class ClientAuthVerifier {
  readonly #domain: string;

  constructor(private readonly o: ClientAuthOptions) {
    this.#domain = o.domain.toLowerCase();
  }

  /** The ClientAuth's client id, checked for form, domain, freshness and nonce (not yet the signature). */
  precheck(auth: ClientAuth | undefined): { clientId: string; auth: ClientAuth } {
    if (auth === undefined) throw new ConnectError("ClientAuth is required", Code.Unauthenticated);
    if (auth.clientId.length > MAX_CLIENT_ID_LENGTH) {
      throw new ConnectError(`client_id is longer than ${MAX_CLIENT_ID_LENGTH} bytes`, Code.InvalidArgument);
    }
    let clientId: string;
    try {
      clientId = utf8.decode(auth.clientId);
    } catch {
      throw new ConnectError("client_id is not UTF-8", Code.InvalidArgument);
    }
    if (clientId === "") throw new ConnectError("client_id is empty", Code.InvalidArgument);
    const d = domainOf(clientId);
    if (d !== this.#domain) {
      throw new ConnectError(`client ${clientId} does not belong to ${this.#domain}`, Code.PermissionDenied);
    }
    const skew = Math.abs(Number(auth.timestampMs) - this.o.now());
    if (!(skew <= this.o.maxClockSkewMs)) {
      throw new ConnectError(
        `ClientAuth timestamp is ${Math.round(skew / 1000)} s off (at most ${this.o.maxClockSkewMs / 1000} s)`,
        Code.Unauthenticated,
      );
    }
    if (auth.nonce.length < MIN_NONCE_LENGTH || auth.nonce.length > MAX_NONCE_LENGTH) {
      throw new ConnectError(`ClientAuth nonce must be ${MIN_NONCE_LENGTH} to ${MAX_NONCE_LENGTH} bytes`, Code.Unauthenticated);
    }
    return { clientId, auth };
  }

  /**
   * The signature over ClientAuthTBS for this method and these fields, then
   * the replay check (after the signature, so only the key's holder writes
   * replay-cache rows).
   */
  async verify(auth: ClientAuth, clientId: string, fields: ClientRequestFields, suite: CiphersuiteName, key: Uint8Array): Promise<void> {
    const tbs = encodeClientAuthTBS({
      clientId: auth.clientId,
      timestampMs: auth.timestampMs,
      nonce: auth.nonce,
      rpcName: clientRpcNameOf(fields.method),
      requestDigest: await clientRequestDigest(fields),
    });
    if (!(await verifyLabeled(suite, key, SignatureLabel.ClientAuth, tbs, auth.signature))) {
      throw new ConnectError(`ClientAuth signature of ${clientId} does not verify for this request`, Code.Unauthenticated);
    }
    await this.#once(clientId, auth);
  }

  async #once(clientId: string, auth: ClientAuth): Promise<void> {
    const skew = this.o.maxClockSkewMs;
    // The auth is acceptable while now <= timestamp + skew. Keying the window
    // on that instant (not on our clock) puts every replay of this auth into
    // the window of its first use, and the window ends after that instant, so
    // purgeExpired never drops the row while the auth could still be used.
    const until = Number(auth.timestampMs) + skew;
    const key = `clientauth:${clientId}:${Buffer.from(auth.nonce).toString("hex")}`;
    const r = await this.o.store.rateLimit(key, { limit: 1, windowMs: 2 * skew + 1 }, until);
    if (!r.allowed) throw new ConnectError("this ClientAuth was already used (a replay): sign every call anew", Code.Unauthenticated);
  }
}
