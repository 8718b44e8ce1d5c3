// DS-level failures: every bad request ends as one DSError (code + sentence,
// plus the current epoch where it is stale). Engine and store errors are
// translated here, in one place.
import { EngineError, WrongEpochError, type EngineErrorCode } from "../mls/index.js";
import {
  EpochConflictError,
  GroupExistsError,
  QuotaExceededError,
  StoreError,
  StoreOutcomeUnknownError,
  StoreUnavailableError,
  UnknownClientError,
  UnknownGroupError,
} from "../store/errors.js";
import { DSErrorCode, WireDecodeError, type DSErrorCodeValue } from "../wire/index.js";

/** A failure of the hub itself (its store, its own stored data, a bug): logged at error level, never the client's fault. */
export interface ServerFault {
  readonly cause: unknown;
}

export class DSFailure extends Error {
  override readonly name = "DSFailure";
  constructor(
    readonly code: DSErrorCodeValue,
    message: string,
    readonly currentEpoch?: bigint,
    /** Set when the hub, not the request, is at fault. */
    readonly fault?: ServerFault,
  ) {
    super(message);
  }
}

/**
 * The hub cannot rebuild a group from its store: the snapshot or a log entry
 * does not decode or replay (e.g. a commit by reference logged by a version
 * that did not keep its proposals, docs/storage.md). Nothing is changed; the
 * group answers group_state_lost until an operator or a member repairs it.
 */
export class GroupStateLostError extends Error {
  override readonly name = "GroupStateLostError";
  constructor(
    readonly groupId: string,
    /** The epoch the store holds. */
    readonly storedEpoch: bigint,
    /** The last epoch that could be rebuilt (undefined: not even the snapshot). */
    readonly rebuiltEpoch: bigint | undefined,
    override readonly cause: unknown,
  ) {
    super(
      `group ${groupId}: the stored state cannot be rebuilt ${rebuiltEpoch === undefined ? "from its snapshot" : `past epoch ${rebuiltEpoch}`} (the store is at epoch ${storedEpoch}): ${cause instanceof Error ? cause.message : String(cause)}`,
    );
  }
}

export function failWith(code: DSErrorCodeValue, message: string, currentEpoch?: bigint): never {
  throw new DSFailure(code, message, currentEpoch);
}

// Engine codes that mean "the sender is not allowed" rather than "the message is malformed".
const ENGINE_CODE: Partial<Record<EngineErrorCode, DSErrorCodeValue>> = {
  decode_error: DSErrorCode.decode_error,
  not_member: DSErrorCode.permission_denied,
  invalid_sender: DSErrorCode.permission_denied,
  invalid_signature: DSErrorCode.authentication_failed,
  unknown_proposal: DSErrorCode.invalid_message,
  wrong_group: DSErrorCode.invalid_request,
};

/** Translate any error thrown while handling a request into a DSFailure. */
export function toDSFailure(err: unknown): DSFailure {
  if (err instanceof DSFailure) return err;
  if (err instanceof WrongEpochError)
    return new DSFailure(DSErrorCode.wrong_epoch, `the group is at epoch ${err.currentEpoch}, the message is for epoch ${err.messageEpoch}`, err.currentEpoch);
  if (err instanceof EngineError) return new DSFailure(ENGINE_CODE[err.code] ?? DSErrorCode.invalid_message, `MLS validation failed: ${err.message}`);
  if (err instanceof WireDecodeError) return new DSFailure(DSErrorCode.decode_error, err.message);
  if (err instanceof EpochConflictError)
    return new DSFailure(DSErrorCode.wrong_epoch, `another commit for epoch ${err.expectedEpoch} was accepted first; the group is at epoch ${err.currentEpoch}`, err.currentEpoch);
  if (err instanceof GroupExistsError)
    return new DSFailure(DSErrorCode.group_exists, err.deleted ? "a group with this group id was deleted; group ids are not reused (request a new one)" : "a group with this group id already exists");
  if (err instanceof UnknownGroupError) return new DSFailure(DSErrorCode.unknown_group, "no such group on this hub");
  if (err instanceof UnknownClientError) return new DSFailure(DSErrorCode.unknown_client, err.message);
  if (err instanceof QuotaExceededError)
    return new DSFailure(DSErrorCode.quota_exceeded, `${err.quota.length > 160 ? `${err.quota.slice(0, 140)}...` : err.quota}: at most ${err.limit}; delete one first`);
  if (err instanceof GroupStateLostError)
    return new DSFailure(
      DSErrorCode.group_state_lost,
      `the hub cannot rebuild this group's state${err.rebuiltEpoch !== undefined ? ` past epoch ${err.rebuiltEpoch}` : ""}; the operator has been told (docs/operations.md: group_state_lost)`,
      undefined,
      { cause: err },
    );
  if (err instanceof StoreOutcomeUnknownError)
    return new DSFailure(DSErrorCode.unavailable, "the DS store did not confirm the write: it may or may not have been applied; check before retrying", undefined, { cause: err });
  if (err instanceof StoreUnavailableError) return new DSFailure(DSErrorCode.unavailable, "the DS store is unavailable; nothing was changed, try again", undefined, { cause: err });
  if (err instanceof StoreError) return new DSFailure(DSErrorCode.internal, "internal error in the DS store; nothing was changed", undefined, { cause: err });
  return new DSFailure(DSErrorCode.internal, "internal error", undefined, { cause: err });
}
