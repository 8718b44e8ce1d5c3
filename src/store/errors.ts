// Typed errors of the storage port. Adapters translate their driver errors into
// these so the DS can map them to DS errors (wrong_epoch, already_exists, ...)
// without knowing which database sits behind the port.

/** Base class: every error thrown by a store is a StoreError. */
export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * An expected-epoch precondition failed: another commit won the race, or the
 * caller's cached state is stale. Carries the epoch the group is at now.
 */
export class EpochConflictError extends StoreError {
  constructor(
    readonly groupId: string,
    readonly expectedEpoch: bigint,
    readonly currentEpoch: bigint,
  ) {
    super(`group ${groupId}: expected epoch ${expectedEpoch}, current epoch is ${currentEpoch}`);
  }
}

/**
 * A setFeedSet precondition failed: the feed follows another recipient set
 * than the caller believed (another instance moved it, or a cold cache).
 */
export class FeedSetConflictError extends StoreError {
  constructor(
    readonly groupId: string,
    readonly expected: string | undefined,
    readonly current: string | undefined,
  ) {
    super(`feed ${groupId}: expected recipient set ${expected ?? "(none)"}, current is ${current ?? "(none)"}`);
  }
}

/** createGroup for a group id that is already stored, or deleted and still tombstoned (`deleted`). */
export class GroupExistsError extends StoreError {
  constructor(
    readonly groupId: string,
    readonly deleted = false,
  ) {
    super(deleted ? `group ${groupId} was deleted; its id is not reused` : `group ${groupId} already exists`);
  }
}

/** An operation names a group that is not stored (never created, or deleted). */
export class UnknownGroupError extends StoreError {
  constructor(readonly groupId: string) {
    super(`group ${groupId} does not exist`);
  }
}

/** A write names a local client that is not registered (e.g. publishing KeyPackages). */
export class UnknownClientError extends StoreError {
  constructor(readonly clientId: string) {
    super(`client ${clientId} is not registered`);
  }
}

/** A KeyPackageRef is already stored (KeyPackages are unique, RFC 9420 Section 10). */
export class DuplicateKeyPackageError extends StoreError {
  constructor(readonly keyPackageRef: Uint8Array) {
    super(`KeyPackage ${Buffer.from(keyPackageRef).toString("hex")} is already stored`);
  }
}

/** A KeyPackageRef was handed out before: a consumed KeyPackage is never stored again (until its lifetime ends). */
export class ConsumedKeyPackageError extends DuplicateKeyPackageError {
  constructor(keyPackageRef: Uint8Array) {
    super(keyPackageRef);
    this.message = `KeyPackage ${Buffer.from(keyPackageRef).toString("hex")} was already handed out`;
  }
}

/** publishKeyPackages would leave the client with more KeyPackages than its quota (`maxStored`). */
export class KeyPackageQuotaError extends StoreError {
  constructor(
    readonly clientId: string,
    readonly limit: number,
  ) {
    super(`client ${clientId} may keep at most ${limit} KeyPackages`);
  }
}

/**
 * The store cannot serve the call: closed, database unreachable, busy past its
 * timeout, disk error. Nothing of the failed write was applied; the caller may
 * retry (the DS answers "unavailable", never a partial success).
 */
export class StoreUnavailableError extends StoreError {}

/** The store was closed; a subclass so "unavailable" handling covers it. */
export class StoreClosedError extends StoreUnavailableError {
  constructor() {
    super("store is closed");
  }
}

/**
 * The write may or may not have been applied: the database did not confirm the
 * commit (connection lost while committing, write concern not satisfied, store
 * closed mid-commit). Unlike StoreUnavailableError this does not say "nothing
 * was applied": re-read the state before repeating a write that is not
 * idempotent. Adapters that commit locally (SQLite) never throw it.
 */
export class StoreOutcomeUnknownError extends StoreError {}

/** A value cannot be represented by the adapter (e.g. an epoch beyond 2^63-1, a document over MongoDB's 16 MiB). */
export class StoreRangeError extends StoreError {}

/** A quota of the batch is used up (e.g. CreateGroupOp.owner's maxGroups); nothing was applied. */
export class QuotaExceededError extends StoreError {
  constructor(
    readonly quota: string,
    readonly limit: number,
  ) {
    super(`${quota}: the limit of ${limit} is reached`);
  }
}
