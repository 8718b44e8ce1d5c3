// Typed engine errors. `code` is stable so the DS can map it to its own error
// codes; the message is for logs only.

export type EngineErrorCode =
  | "decode_error" // bytes do not parse as the expected MLS structure
  | "unsupported_wireformat" // not a PublicMessage (the DS cannot read PrivateMessages)
  | "unsupported_content" // application data or a content type the engine does not process
  | "wrong_group" // group_id differs from the hosted group
  | "wrong_epoch" // epoch differs from the current one (carries currentEpoch)
  | "not_member" // sender leaf blank / out of range, unknown external sender index
  | "invalid_sender" // sender type not allowed for this content / proposal
  | "invalid_signature" // FramedContent, LeafNode, KeyPackage or GroupInfo signature
  | "invalid_proposal" // a proposal violates RFC 9420 12.1
  | "invalid_commit" // proposal list / combination violates RFC 9420 12.2-12.4
  | "unknown_proposal" // commit references a proposal the engine does not hold
  | "path_required" // commit lacks an UpdatePath although required
  | "invalid_path" // UpdatePath malformed (length, ciphertext counts, keys)
  | "invalid_parent_hash"
  | "invalid_tree" // ratchet tree fails validation when seeding
  | "tree_hash_mismatch"
  | "duplicate_key" // encryption / signature key already in the tree
  | "duplicate_client" // client identifier already a member
  | "invalid_key_package"
  | "key_package_expired" // lifetime outside [not_before - skew, not_after + skew]
  | "unsupported_capability" // capabilities / required_capabilities / extension support
  | "invalid_leaf_node"
  | "invalid_group_info"
  | "group_suspended" // a ReInit was committed; the group takes no more commits
  | "unsupported_ciphersuite"; // the suite's signature algorithm is not available here

export class EngineError extends Error {
  override readonly name = "EngineError";
  constructor(
    readonly code: EngineErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** The message's epoch is not the group's current epoch. */
export class WrongEpochError extends EngineError {
  constructor(
    readonly currentEpoch: bigint,
    readonly messageEpoch: bigint,
  ) {
    super("wrong_epoch", `message epoch ${messageEpoch}, current epoch ${currentEpoch}`);
  }
}

export function fail(code: EngineErrorCode, message: string): never {
  throw new EngineError(code, message);
}
