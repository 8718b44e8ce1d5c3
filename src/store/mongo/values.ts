// Small pure pieces of the MongoDB adapter: URIs, client options, limits,
// dates and byte copies. Unit-tested without a server.

import type { MongoClientOptions } from "mongodb";
import { StoreRangeError } from "../errors.js";

// ---------------------------------------------------------------------------
// URIs

/** scheme, userinfo@hosts (no raw "/" or "?" in either), path, query, fragment. */
const URI = /^(mongodb(?:\+srv)?:\/\/)([^/?#]*)(\/[^?#]*)?(\?[^#]*)?(#.*)?$/i;

function splitUri(uri: string): { head: string; hosts: string; path: string; query: string } {
  const m = URI.exec(uri);
  if (!m || m[2] === "") throw new StoreRangeError(`not a MongoDB connection string: ${redact(uri)}`);
  return { head: m[1]!, hosts: m[2]!, path: m[3] ?? "", query: m[4] ?? "" };
}

/**
 * The database named by the URI's path ("" when none). Multi-host and
 * mongodb+srv URIs work (new URL() throws on "mongodb://a:1,b:2/...").
 */
export function databaseOf(uri: string): string {
  const { path } = splitUri(uri);
  return path.length > 1 ? decodeURIComponent(path.slice(1)) : "";
}

/** The same URI naming another database; hosts, credentials and options kept as written. */
export function withDatabase(uri: string, database: string): string {
  if (database === "" || /[/\\. "$\0]/.test(database)) throw new StoreRangeError(`invalid MongoDB database name: ${JSON.stringify(database)}`);
  const { head, hosts, query } = splitUri(uri);
  return `${head}${hosts}/${encodeURIComponent(database)}${query}`;
}

/** The URI without its password, for messages. */
export function redact(uri: string): string {
  return uri.replace(/^(mongodb(?:\+srv)?:\/\/[^:/?#@]*):[^@/?#]*@/i, "$1:***@");
}

function hasUriOption(uri: string, name: string): boolean {
  const m = URI.exec(uri);
  const query = m?.[4] ?? "";
  return query
    .slice(1)
    .split("&")
    .some((kv) => kv.split("=")[0]!.toLowerCase() === name.toLowerCase());
}

// ---------------------------------------------------------------------------
// Client options

/** How long an operation waits for a usable primary before "unavailable" (the driver's default is 30 s). */
export const DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5000;

/**
 * The adapter's client options. Reads outside transactions use majority read
 * concern: a "local" read can return data that a failover rolls back, after
 * which a queue sequence number could be handed to a different message.
 * Writes are acknowledged by a majority. serverSelectionTimeoutMS is only set
 * when the URI does not (object options override the URI's in the driver).
 */
export function mongoClientOptions(uri: string): MongoClientOptions {
  return {
    useBigInt64: true,
    promoteBuffers: true,
    retryWrites: true,
    retryReads: true,
    readPreference: "primary",
    readConcern: { level: "majority" },
    writeConcern: { w: "majority" },
    ...(hasUriOption(uri, "serverSelectionTimeoutMS") ? {} : { serverSelectionTimeoutMS: DEFAULT_SERVER_SELECTION_TIMEOUT_MS }),
  };
}

// ---------------------------------------------------------------------------
// Limits

/** Largest `limit` sent to the server: an int32 (a bigger number would go out as a double). */
export const MAX_FIND_LIMIT = 0x7fffffff;

/**
 * A listGroups limit with SQLite's meaning (LIMIT n): undefined or a negative
 * integer: no limit; 0: nothing; n: at most n. Non-integers are refused (SQLite
 * refuses them too). The result is 0 (return nothing), undefined (no limit) or
 * an int32 (Mongo's limit(0) would mean "no limit", so 0 is never sent).
 */
export function listLimit(limit: number | undefined): number | undefined {
  if (limit === undefined) return undefined;
  if (!Number.isSafeInteger(limit)) throw new StoreRangeError(`limit must be an integer, got ${String(limit)}`);
  if (limit < 0 || limit > MAX_FIND_LIMIT) return undefined;
  return limit;
}

/** A page size for reads: at least 1, at most `max` (bounded batches, never a double on the wire). */
export function pageSize(n: number, max = MAX_FIND_LIMIT): number {
  if (!Number.isFinite(n)) return max;
  return Math.max(1, Math.min(max, Math.floor(n)));
}

/**
 * Run `step` until it does less than a full batch; the total it did. Each
 * step is bounded (one batch), so no single operation grows with the backlog.
 */
export async function drainBatches(batch: number, step: () => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await step();
    total += n;
    if (n < batch) return total;
  }
}

// ---------------------------------------------------------------------------
// Dates

/** Largest time a JS Date (and so the driver) can carry; BSON would write an Invalid Date as 1970. */
export const MAX_DATE_MS = 8_640_000_000_000_000;

/** How long after an entry's expiry (and its write) the TTL index may remove it. */
export const TTL_GRACE_MS = 3_600_000;

/**
 * When the TTL safety net may delete a history entry: a grace period after
 * both its expiry and the wall-clock time it was written, clamped to a valid
 * date. So an entry written with an expiry in the past (tests use 1970) is not
 * deleted by the TTL monitor under the reader's feet: purgeExpired is the
 * authoritative purge, the TTL only catches what it never got to. A
 * non-finite expiry never expires by TTL (purgeExpired still decides).
 */
export function ttlDate(expiresAt: number, wallNow: number, graceMs = TTL_GRACE_MS): Date {
  if (Number.isNaN(expiresAt) || expiresAt === Number.POSITIVE_INFINITY) return new Date(MAX_DATE_MS);
  const base = Math.max(expiresAt, wallNow);
  return new Date(Math.min(MAX_DATE_MS, base + graceMs));
}

// ---------------------------------------------------------------------------
// Bytes

/**
 * A copy of driver bytes as a plain Uint8Array. With promoteBuffers the
 * driver returns views into the whole reply buffer; keeping one (a cached
 * snapshot, a token) would keep the reply alive.
 */
export function copyBytes(v: unknown): Uint8Array {
  if (v == null) return new Uint8Array(0);
  if (v instanceof Uint8Array) return new Uint8Array(v);
  throw new StoreRangeError(`expected bytes in a stored document, found ${typeof v}`);
}

/** Largest opaque value the adapter stores inline (headroom under the 16 MiB document limit for the other fields). */
export const MAX_INLINE_VALUE = 16 * 1024 * 1024 - 64 * 1024;

/** Refuse a value that cannot fit a document before the driver fails on it (nothing is applied). */
export function checkValueSize(what: string, v: Uint8Array, max = MAX_INLINE_VALUE): Uint8Array {
  if (v.byteLength > max) throw new StoreRangeError(`${what} of ${v.byteLength} bytes exceeds the MongoDB adapter's ${max}-byte limit`);
  return v;
}
