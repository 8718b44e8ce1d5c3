// FanoutAuthTokens (draft Section 4.6, whose "cryptographic scheme" is a
// TODO): issued by a client's home DS, opaque to everyone else, verifiable by
// the home DS alone, bound to one client identifier, and revocable. The scheme
// and its reasons are in docs/federation.md.
//
//   token = version(1) || key_id(4) || issued_at_ms(8) || nonce(16) || mac(32)
//   mac   = HMAC-SHA256(domain token key,
//             opaque label<V> = "MIMI FanoutAuthToken" ||
//             opaque client_id<V> ||
//             version || key_id || issued_at_ms || nonce)
//
// The MAC makes a token useless for any other client (a replayed token fails
// it) and unforgeable without the domain's key. Revocation needs no list of
// tokens: the client's record (ClientRecord.authData) holds a "not before"
// time, and tokens issued before it stop being valid (after a grace period).
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import {
  type Codec,
  decodeWith,
  encodeWith,
  opaqueV,
  struct,
  uint16,
  uint64,
  uint8,
  utf8V,
  vectorV,
} from "../wire/index.js";

export const FANOUT_TOKEN_VERSION = 1;
const TOKEN_LABEL = "MIMI FanoutAuthToken";
const KEY_ID_LEN = 4;
const NONCE_LEN = 16;
const MAC_LEN = 32;
const HEAD_LEN = 1 + KEY_ID_LEN + 8 + NONCE_LEN;
/** Length of every token this DS issues (the `token` bytes of a FanoutAuthToken). */
export const FANOUT_TOKEN_LENGTH = HEAD_LEN + MAC_LEN;
const KEY_LEN = 32;

export class FanoutTokenKeyError extends Error {
  override readonly name = "FanoutTokenKeyError";
}

/** One HMAC key of the domain. */
interface TokenKey {
  readonly id: Uint8Array;
  readonly key: Uint8Array;
}

interface KeyFile {
  version: 1;
  /** Newest first: the first key issues, all of them verify (key rotation). */
  keys: { key: string; createdAt: number }[];
}

const keyIdOf = (key: Uint8Array): Uint8Array =>
  new Uint8Array(createHash("sha256").update("MIMI FanoutAuthToken key id").update(key).digest().subarray(0, KEY_ID_LEN));

const utf8 = new TextEncoder();
const varOpaque = (b: Uint8Array): Uint8Array => encodeWith(opaqueV, b);

/** What a valid token says about itself. */
export interface TokenClaims {
  readonly issuedAt: number;
}

/**
 * The domain's token keys. Every instance of one domain must share them (the
 * key file lives in the data directory or is given by --fanout-token-key).
 */
export class FanoutTokenKeys {
  private constructor(private readonly keys: readonly TokenKey[]) {
    if (keys.length === 0) throw new FanoutTokenKeyError("no FanoutAuthToken key");
  }

  /** From raw 32-byte keys, newest (issuing) first. */
  static fromKeys(keys: readonly Uint8Array[]): FanoutTokenKeys {
    for (const k of keys) if (k.length !== KEY_LEN) throw new FanoutTokenKeyError(`a token key has ${k.length} bytes, want ${KEY_LEN}`);
    return new FanoutTokenKeys(keys.map((key) => ({ id: keyIdOf(key), key: new Uint8Array(key) })));
  }

  /** A fresh random key kept in memory only (tests). */
  static generate(): FanoutTokenKeys {
    return FanoutTokenKeys.fromKeys([new Uint8Array(randomBytes(KEY_LEN))]);
  }

  /**
   * Loads the key file, creating it (mode 0600) with one random key when it is
   * missing. Format: {"version":1,"keys":[{"key":"<base64 32 bytes>","createdAt":ms}]},
   * newest first; to rotate, prepend a key and keep the old ones while tokens
   * made with them are in use.
   */
  static open(file: string): FanoutTokenKeys {
    if (!existsSync(file)) {
      const out: KeyFile = { version: 1, keys: [{ key: randomBytes(KEY_LEN).toString("base64"), createdAt: Date.now() }] };
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      writeFileSync(file, JSON.stringify(out, null, 2) + "\n", { mode: 0o600, flag: "wx" });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new FanoutTokenKeyError(`${file}: not JSON (${(err as Error).message})`);
    }
    const f = parsed as Partial<KeyFile>;
    if (f.version !== 1 || !Array.isArray(f.keys) || f.keys.length === 0) {
      throw new FanoutTokenKeyError(`${file}: want {"version":1,"keys":[{"key":"<base64>"}...]}`);
    }
    return FanoutTokenKeys.fromKeys(
      f.keys.map((k, i) => {
        if (typeof k?.key !== "string") throw new FanoutTokenKeyError(`${file}: keys[${i}].key must be a base64 string`);
        return new Uint8Array(Buffer.from(k.key, "base64"));
      }),
    );
  }

  /** A fresh token for `clientId` (the `token` bytes of a FanoutAuthToken). */
  issue(clientId: string, now: number = Date.now()): Uint8Array {
    const k = this.keys[0]!;
    const head = new Uint8Array(HEAD_LEN);
    head[0] = FANOUT_TOKEN_VERSION;
    head.set(k.id, 1);
    new DataView(head.buffer).setBigUint64(1 + KEY_ID_LEN, BigInt(Math.max(0, Math.floor(now))));
    head.set(randomBytes(NONCE_LEN), 1 + KEY_ID_LEN + 8);
    const out = new Uint8Array(FANOUT_TOKEN_LENGTH);
    out.set(head);
    out.set(mac(k.key, clientId, head), HEAD_LEN);
    return out;
  }

  /** The token's claims when its MAC verifies for `clientId`; undefined otherwise (forged, other client, unknown key). */
  verify(clientId: string, token: Uint8Array): TokenClaims | undefined {
    if (token.length !== FANOUT_TOKEN_LENGTH || token[0] !== FANOUT_TOKEN_VERSION) return undefined;
    const id = token.subarray(1, 1 + KEY_ID_LEN);
    const k = this.keys.find((x) => timingSafeEqual(x.id, id));
    if (k === undefined) return undefined;
    const head = token.subarray(0, HEAD_LEN);
    if (!timingSafeEqual(mac(k.key, clientId, head), token.subarray(HEAD_LEN))) return undefined;
    return { issuedAt: Number(new DataView(token.buffer, token.byteOffset).getBigUint64(1 + KEY_ID_LEN)) };
  }
}

function mac(key: Uint8Array, clientId: string, head: Uint8Array): Uint8Array {
  return new Uint8Array(
    createHmac("sha256", key)
      .update(varOpaque(utf8.encode(TOKEN_LABEL)))
      .update(varOpaque(utf8.encode(clientId)))
      .update(head)
      .digest(),
  );
}

// ---------------------------------------------------------------- the client's record

/**
 * What the DS keeps per local client in ClientRecord.authData (TLS-encoded):
 *
 *   struct {
 *     uint8  version = 1;
 *     uint16 cipher_suite;          // whose signature scheme verifies ClientAuth
 *     uint64 tokens_not_before_ms;  // tokens issued earlier are revoked ...
 *     uint64 grace_not_before_ms;   // ... but those issued since this time ...
 *     uint64 grace_until_ms;        // ... stay valid until this time
 *     opaque blocked_domains<V>;    // UTF-8 hub domains, each <V>
 *     opaque blocked_groups<V>;     // MLS group ids, each <V>
 *   } ClientAuthData;
 */
export interface ClientAuthData {
  readonly cipherSuite: number;
  /** Tokens issued at or after this time (ms) are valid. */
  readonly tokensNotBefore: number;
  /** Tokens issued in [graceNotBefore, tokensNotBefore) stay valid until graceUntil. */
  readonly graceNotBefore: number;
  readonly graceUntil: number;
  /** Hub domains whose fanout this client refuses (draft Section 10). */
  readonly blockedDomains: readonly string[];
  /** MLS group ids whose fanout this client refuses. */
  readonly blockedGroups: readonly Uint8Array[];
}

interface AuthDataWire {
  readonly version: number;
  readonly cipherSuite: number;
  readonly tokensNotBefore: bigint;
  readonly graceNotBefore: bigint;
  readonly graceUntil: bigint;
  readonly blockedDomains: readonly string[];
  readonly blockedGroups: readonly Uint8Array[];
}

const authDataCodec: Codec<AuthDataWire> = struct<AuthDataWire>([
  ["version", "version", uint8],
  ["cipher_suite", "cipherSuite", uint16],
  ["tokens_not_before_ms", "tokensNotBefore", uint64],
  ["grace_not_before_ms", "graceNotBefore", uint64],
  ["grace_until_ms", "graceUntil", uint64],
  ["blocked_domains", "blockedDomains", vectorV(utf8V)],
  ["blocked_groups", "blockedGroups", vectorV(opaqueV)],
]);

export class ClientAuthDataError extends Error {
  override readonly name = "ClientAuthDataError";
}

export function encodeClientAuthData(d: ClientAuthData): Uint8Array {
  return encodeWith(authDataCodec, {
    version: 1,
    cipherSuite: d.cipherSuite,
    tokensNotBefore: BigInt(Math.floor(d.tokensNotBefore)),
    graceNotBefore: BigInt(Math.floor(d.graceNotBefore)),
    graceUntil: BigInt(Math.floor(d.graceUntil)),
    blockedDomains: d.blockedDomains,
    blockedGroups: d.blockedGroups,
  });
}

export function decodeClientAuthData(bytes: Uint8Array): ClientAuthData {
  let w: AuthDataWire;
  try {
    w = decodeWith(authDataCodec, bytes, "ClientAuthData");
  } catch (err) {
    throw new ClientAuthDataError(`client record: ${(err as Error).message}`);
  }
  if (w.version !== 1) throw new ClientAuthDataError(`client record: unknown version ${w.version}`);
  return {
    cipherSuite: w.cipherSuite,
    tokensNotBefore: Number(w.tokensNotBefore),
    graceNotBefore: Number(w.graceNotBefore),
    graceUntil: Number(w.graceUntil),
    blockedDomains: w.blockedDomains,
    blockedGroups: w.blockedGroups,
  };
}

/** A new client's record: only tokens issued from now on are valid (a re-registered id loses old ones). */
export function newClientAuthData(cipherSuite: number, now: number): ClientAuthData {
  return { cipherSuite, tokensNotBefore: now, graceNotBefore: now, graceUntil: 0, blockedDomains: [], blockedGroups: [] };
}

/** Whether a token with these (MAC-verified) claims is still valid under the client's record. */
export function tokenAccepted(auth: ClientAuthData, claims: TokenClaims, now: number): boolean {
  if (claims.issuedAt >= auth.tokensNotBefore) return true;
  return now < auth.graceUntil && claims.issuedAt >= auth.graceNotBefore;
}

/**
 * Revokes every token issued before `now`; they stay valid for `graceMs` more
 * (so groups still using them can be updated with a fresh token).
 */
export function revokeTokens(auth: ClientAuthData, now: number, graceMs: number): ClientAuthData {
  // Tokens valid right now (issued since the current not-before) get the grace
  // period; older ones, already revoked, do not come back.
  return { ...auth, tokensNotBefore: now + 1, graceNotBefore: auth.tokensNotBefore, graceUntil: now + Math.max(0, graceMs) };
}

/**
 * A token for a client under its record: never stamped before the record's
 * not-before time (a rotation that revoked older tokens in this millisecond
 * must not make its own new token invalid).
 */
export function issueToken(keys: FanoutTokenKeys, clientId: string, auth: ClientAuthData, now: number): Uint8Array {
  return keys.issue(clientId, Math.max(now, auth.tokensNotBefore));
}
