// Public group engine of the MIMI DS (see docs/engine.md).
export { EngineError, WrongEpochError, type EngineErrorCode } from "./errors.js";
export {
  seedFromGroupInfo,
  seedFromGroupContext,
  groupInfoFromMlsMessage,
  processMessage,
  merge,
  apply,
  assembleGroupInfo,
  keyPackageRef,
  mergeUpdatePath,
  transcriptHashes,
  verifyPublicMessageSignature,
  type GroupState,
  type EngineOptions,
  type SeedInput,
  type SeedOptions,
  type Staged,
  type StagedCommit,
  type StagedProposal,
  type PendingProposal,
  type AddedMember,
  type RemovedMember,
  type UpdatedMember,
} from "./group.js";
export {
  epochOf,
  groupIdOf,
  groupContextBytes,
  ratchetTreeBytes,
  treeHash,
  groupInfoBytes,
  groupInfoMessage,
  memberAt,
  memberByClientId,
  memberBySignatureKey,
  members,
  memberCount,
  pendingProposals,
  unreferencedProposals,
  externalSenderIndex,
  encodeGroupState,
  decodeGroupState,
  replay,
  type Member,
  type StoredMessage,
} from "./state.js";
export { clientIdOf, domainOf, nonCanonicalClientId } from "./identity.js";
export { nodeCryptoProvider, engineCrypto, type EngineCrypto } from "./crypto.js";
export { concat, decodeExternalSendersExtension, decodePartialGroupInfo, type ExternalSenderEntry, type PartialGroupInfo, PROPOSAL_TYPE_SELF_REMOVE } from "./codec.js";
export { type PublicTree, type LeafEntry, type ParentEntry, type TNode } from "./tree.js";
export { type PathInfo } from "./codec.js";
