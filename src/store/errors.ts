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

/** createGroup for a group id that is already stored. */
export class GroupExistsError extends StoreError {
  constructor(readonly groupId: string) {
    super(`group ${groupId} already exists`);
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

/** A value cannot be represented by the adapter (e.g. an epoch beyond 2^63-1). */
export class StoreRangeError extends StoreError {}
