// The local client registry as the delivery layer uses it: the signature key
// (ClientRecord.signaturePublicKey) and ClientAuthData (tokens' validity,
// blocks) in ClientRecord.authData. Read-modify-writes of one client's record
// are serialized within this process; the store has no compare-and-set on
// client records (see docs/federation.md, open points).
import type { ClientRecord, Store } from "../store/port.js";
import {
  type ClientAuthData,
  type FanoutTokenKeys,
  decodeClientAuthData,
  encodeClientAuthData,
  issueToken,
  revokeTokens,
  tokenAccepted,
} from "./tokens.js";

export interface LocalClient {
  readonly record: ClientRecord;
  readonly auth: ClientAuthData;
}

export async function loadLocalClient(store: Store, clientId: string): Promise<LocalClient | undefined> {
  const record = await store.getClient(clientId);
  if (record === undefined) return undefined;
  return { record, auth: decodeClientAuthData(record.authData) };
}

export type TokenCheck = "ok" | "unknown_client" | "invalid_token";

/** Whether `token` (the bytes inside FanoutAuthToken) is a currently valid token of `clientId`. */
export function checkToken(keys: FanoutTokenKeys, client: LocalClient | undefined, clientId: string, token: Uint8Array, now: number): TokenCheck {
  if (client === undefined) return "unknown_client";
  const claims = keys.verify(clientId, token);
  if (claims === undefined || !tokenAccepted(client.auth, claims, now)) return "invalid_token";
  return "ok";
}

const locks = new Map<string, Promise<unknown>>();

/** Runs `fn` after every earlier call for the same client (in this process) has finished. */
export function withClientLock<T>(clientId: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(clientId) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  locks.set(clientId, tail);
  void tail.then(() => {
    if (locks.get(clientId) === tail) locks.delete(clientId);
  });
  return run;
}

export class UnknownLocalClientError extends Error {
  override readonly name = "UnknownLocalClientError";
  constructor(readonly clientId: string) {
    super(`client ${clientId} is not registered here`);
  }
}

/** Replace a client's ClientAuthData with `change(current)`. */
export function updateClientAuth(
  store: Store,
  clientId: string,
  change: (auth: ClientAuthData) => ClientAuthData,
): Promise<ClientAuthData> {
  return withClientLock(clientId, async () => {
    const c = await loadLocalClient(store, clientId);
    if (c === undefined) throw new UnknownLocalClientError(clientId);
    const auth = change(c.auth);
    await store.apply({
      ops: [{ kind: "putClient", clientId, signaturePublicKey: c.record.signaturePublicKey, authData: encodeClientAuthData(auth) }],
    });
    return auth;
  });
}

/**
 * A fresh FanoutAuthToken for the client. With `revokeGraceMs`, every token
 * issued before stops being valid once the grace period has passed.
 */
export async function rotateFanoutToken(
  store: Store,
  keys: FanoutTokenKeys,
  clientId: string,
  options: { readonly revokeGraceMs?: number; readonly now?: number } = {},
): Promise<Uint8Array> {
  const now = options.now ?? Date.now();
  const grace = options.revokeGraceMs;
  if (grace === undefined) {
    const c = await loadLocalClient(store, clientId);
    if (c === undefined) throw new UnknownLocalClientError(clientId);
    return issueToken(keys, clientId, c.auth, now);
  }
  const auth = await updateClientAuth(store, clientId, (a) => revokeTokens(a, now, grace));
  return issueToken(keys, clientId, auth, now);
}

/** What a client refuses to receive by fanout (draft Section 10). */
export interface BlockChange {
  readonly blockDomains?: readonly string[];
  readonly unblockDomains?: readonly string[];
  readonly blockGroups?: readonly Uint8Array[];
  readonly unblockGroups?: readonly Uint8Array[];
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** The client's auth data with `change` applied (blocks first, then unblocks). */
export function withBlockChange(a: ClientAuthData, change: BlockChange): ClientAuthData {
  const domains = new Set(a.blockedDomains);
  for (const d of change.blockDomains ?? []) domains.add(d.toLowerCase());
  for (const d of change.unblockDomains ?? []) domains.delete(d.toLowerCase());
  const groups = new Map(a.blockedGroups.map((g) => [hex(g), g] as const));
  for (const g of change.blockGroups ?? []) groups.set(hex(g), new Uint8Array(g));
  for (const g of change.unblockGroups ?? []) groups.delete(hex(g));
  return { ...a, blockedDomains: [...domains].sort(), blockedGroups: [...groups.values()] };
}

export function updateBlocks(store: Store, clientId: string, change: BlockChange): Promise<ClientAuthData> {
  return updateClientAuth(store, clientId, (a) => withBlockChange(a, change));
}
