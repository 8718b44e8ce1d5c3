// Driver errors -> the port's typed errors. Pure (no I/O), so every branch is
// unit-tested with the driver's own error classes (test/store/mongo-unit.test.ts).
//
// What an error means depends on where it happened:
// - "read": nothing was written; closed or unreachable, or a bug.
// - "operation": inside a transaction before commit (or a single write outside
//   one); the transaction is aborted, so nothing was applied.
// - "commit": commitTransaction failed. Only a TransientTransactionError label
//   says the transaction was not committed; anything else (a network error
//   after the retries, a write concern error, the client closed mid-commit)
//   leaves the outcome unknown, and that must not be reported as "nothing
//   applied" (StoreOutcomeUnknownError).

import {
  BSON,
  MongoClientClosedError,
  MongoError,
  MongoErrorLabel,
  MongoExpiredSessionError,
  MongoInvalidArgumentError,
  MongoNetworkError,
  MongoNotConnectedError,
  MongoOperationTimeoutError,
  MongoServerClosedError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
  MongoWriteConcernError,
} from "mongodb";
import {
  DuplicateKeyPackageError,
  GroupExistsError,
  StoreClosedError,
  StoreError,
  StoreOutcomeUnknownError,
  StoreRangeError,
  StoreUnavailableError,
} from "../errors.js";

export type ErrorPhase = "read" | "operation" | "commit";

export interface TranslateContext {
  readonly phase: ErrorPhase;
  /** The store is closing: "client closed" errors are StoreClosedError, not an outage. */
  readonly closing: boolean;
}

/** Server codes that mean "not now" (failover, shutdown, time limits, write conflicts): retry later. */
const UNAVAILABLE_CODES = new Set([
  6, // HostUnreachable
  7, // HostNotFound
  24, // LockTimeout
  46, // LockBusy
  50, // MaxTimeMSExpired
  89, // NetworkTimeout
  91, // ShutdownInProgress
  112, // WriteConflict
  133, // FailedToSatisfyReadPreference
  134, // ReadConcernMajorityNotAvailableYet
  189, // PrimarySteppedDown
  244, // TransactionCoordinatorSteppingDown
  251, // NoSuchTransaction
  262, // ExceededTimeLimit
  290, // TransactionExceededLifetimeLimitSeconds
  365, // TemporarilyUnavailable
  9001, // SocketException
  10107, // NotWritablePrimary
  11600, // InterruptedAtShutdown
  11602, // InterruptedDueToReplStateChange
  13435, // NotPrimaryNoSecondaryOk
  13436, // NotPrimaryOrSecondary
]);

/** Server codes for a document over the 16 MiB BSON limit. */
const TOO_LARGE_CODES = new Set([
  10334, // BSONObjectTooLarge
  17419, // "Resulting document after update is larger than 16777216"
  17420, // "Document failed to serialize" (update result too large)
]);

/**
 * Unique indexes whose duplicate-key error means a concurrent writer got there
 * first (an upsert race): nothing was applied, retrying is right (inside a
 * transaction the adapter retries it: markUpsertRace). Keyed
 * "collection/index name"; the indexes of MONGO_MIGRATIONS (schema.ts).
 */
const RACE_INDEXES = new Set([
  "clients/_id_",
  "queues/_id_",
  "processed/_id_",
  "rate_limits/_id_",
  "group_snapshots/_id_",
  "meta/_id_",
  "history/groupId_1_epoch_1",
  "fanout_tokens/groupId_1_clientId_1",
  "feed_members/clientId_1_groupId_1",
  "retained_snapshots/groupId_1_epoch_1",
  "proposals/groupId_1_ref_1",
  "key_packages/one_last_resort",
]);

export function translateMongoError(err: unknown, ctx: TranslateContext): unknown {
  if (err instanceof StoreError) return err;

  if (ctx.phase === "commit") {
    if (hasLabel(err, MongoErrorLabel.TransientTransactionError)) {
      return new StoreUnavailableError(`mongodb: the transaction was not committed: ${messageOf(err)}`, { cause: err });
    }
    return new StoreOutcomeUnknownError(
      `mongodb: the commit was not confirmed, the write may or may not have been applied: ${messageOf(err)}`,
      { cause: err },
    );
  }

  // A write outside a transaction that the primary applied but did not replicate as asked.
  if (ctx.phase === "operation" && isWriteConcernError(err)) {
    return new StoreOutcomeUnknownError(`mongodb: write concern not satisfied, the write may have been applied: ${messageOf(err)}`, {
      cause: err,
    });
  }

  const dup = duplicateKeyOf(err);
  if (dup) return translateDuplicate(dup, err);

  if (isTooLarge(err)) {
    return new StoreRangeError(`mongodb: a document exceeds the 16 MiB BSON limit: ${messageOf(err)}`, { cause: err });
  }

  if (isClosedError(err)) {
    return ctx.closing ? closedWithCause(err) : new StoreUnavailableError(`mongodb: ${messageOf(err)}`, { cause: err });
  }

  if (
    err instanceof MongoNetworkError ||
    err instanceof MongoServerSelectionError ||
    err instanceof MongoOperationTimeoutError ||
    hasLabel(err, MongoErrorLabel.TransientTransactionError) ||
    hasLabel(err, MongoErrorLabel.RetryableWriteError) ||
    (err instanceof MongoServerError && UNAVAILABLE_CODES.has(Number(err.code)))
  ) {
    return new StoreUnavailableError(`mongodb: ${messageOf(err)}`, { cause: err });
  }

  // Anything else from the driver (a rejected command, a driver bug): typed, but internal.
  if (err instanceof MongoError) {
    const code = err instanceof MongoServerError && err.codeName ? `${String(err.codeName)}: ` : "";
    return new StoreError(`mongodb: ${code}${err.message}`, { cause: err });
  }
  return err;
}

/**
 * A duplicate key on an upsert-race index raised inside a transaction: two
 * transactions inserted the same new document (a queue's first counter, a
 * rate-limit window) and the server reported E11000 instead of a write
 * conflict. Nothing was applied and a retry sees the winner's document, so it
 * is marked TransientTransactionError and withTransaction retries it like a
 * write conflict. Returns whether it marked the error.
 */
export function markUpsertRace(err: unknown): boolean {
  const dup = duplicateKeyOf(err);
  if (!dup || !RACE_INDEXES.has(`${dup.collection}/${dup.index}`)) return false;
  (err as MongoServerError).addErrorLabel(MongoErrorLabel.TransientTransactionError);
  return true;
}

/** What a duplicate-key (E11000) error names. */
export interface DuplicateKey {
  /** Collection name without the database ("key_packages"). */
  readonly collection: string;
  readonly index: string;
  /** The duplicated key's values, when the server sent them. */
  readonly keyValue: Record<string, unknown> | undefined;
}

export function duplicateKeyOf(err: unknown): DuplicateKey | undefined {
  if (!(err instanceof MongoServerError) || Number(err.code) !== 11000) return undefined;
  // E11000 duplicate key error collection: <db>.<collection> index: <name> dup key: { ... }
  const m = /collection: ([^.\s]+)\.(\S+) index: (\S+)/.exec(err.message);
  if (!m) return { collection: "", index: "", keyValue: keyValueOf(err) };
  return { collection: m[2]!, index: m[3]!, keyValue: keyValueOf(err) };
}

function keyValueOf(err: MongoServerError): Record<string, unknown> | undefined {
  const direct = (err as { keyValue?: unknown }).keyValue;
  if (isRecord(direct)) return direct;
  const first = (err as { writeErrors?: unknown }).writeErrors;
  if (Array.isArray(first) && first.length > 0) {
    const e = first[0] as { keyValue?: unknown; err?: { keyValue?: unknown } };
    if (isRecord(e.keyValue)) return e.keyValue;
    if (isRecord(e.err?.keyValue)) return e.err.keyValue;
  }
  return undefined;
}

function translateDuplicate(dup: DuplicateKey, err: unknown): StoreError {
  const where = `${dup.collection}/${dup.index}`;
  if (where === "groups/_id_") {
    const id = dup.keyValue?._id;
    return new GroupExistsError(typeof id === "string" ? id : "(unknown)");
  }
  if (where === "key_packages/ref_1") return new DuplicateKeyPackageError(refOf(dup.keyValue?.ref, err));
  if (RACE_INDEXES.has(where)) {
    return new StoreUnavailableError(`mongodb: a concurrent write to ${where} came first; nothing was applied, try again`, { cause: err });
  }
  // queue_entries {queue, seq}, group_log {groupId, epoch}, blob_chunks {b, i}: the adapter's own invariants.
  return new StoreError(`mongodb: duplicate key in ${where || "an unknown index"} (an invariant of the adapter was violated)`, { cause: err });
}

/** The KeyPackageRef of a duplicate on key_packages.ref: from keyValue, else from the message's BinData. */
function refOf(v: unknown, err: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (v instanceof BSON.Binary) return new Uint8Array(v.value());
  const m = /BinData\(\d+, ?([A-Za-z0-9+/=]+)\)/.exec(messageOf(err));
  return m ? new Uint8Array(Buffer.from(m[1]!, "base64")) : new Uint8Array(0);
}

function isTooLarge(err: unknown): boolean {
  if (err instanceof MongoServerError && TOO_LARGE_CODES.has(Number(err.code))) return true;
  if ((err instanceof MongoServerError || err instanceof MongoInvalidArgumentError) && /too large|larger than the maximum size|exceeds maximum/i.test(err.message)) {
    return true;
  }
  // bson serializes into a 17 MiB buffer: a bigger document fails there, before the driver sends it.
  if (err instanceof RangeError && /out of bounds|out of range/i.test(err.message)) return true;
  return err instanceof BSON.BSONError && /too large|size/i.test(err.message);
}

function isClosedError(err: unknown): boolean {
  return (
    err instanceof MongoClientClosedError ||
    err instanceof MongoTopologyClosedError ||
    err instanceof MongoNotConnectedError ||
    err instanceof MongoServerClosedError ||
    err instanceof MongoExpiredSessionError
  );
}

function isWriteConcernError(err: unknown): boolean {
  if (err instanceof MongoWriteConcernError) return true;
  return err instanceof MongoServerError && isRecord((err as { writeConcernError?: unknown }).writeConcernError);
}

function closedWithCause(err: unknown): StoreClosedError {
  const e = new StoreClosedError();
  (e as { cause?: unknown }).cause = err;
  return e;
}

function hasLabel(err: unknown, label: string): boolean {
  return err instanceof MongoError && err.hasErrorLabel(label);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
