// The delivery layer: local client queues (ClientService), fanout streams from
// the hub to guest DSs (FanoutService), the guest side (GuestConsumer), the
// FanoutAuthToken scheme and the federation peers (docs/federation.md).
export {
  createClientService,
  clientRpcName,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  DEFAULT_MAX_KEY_PACKAGES_PER_CALL,
  DEFAULT_MAX_KEY_PACKAGES_PER_CLIENT,
  DEFAULT_MAX_RECEIVE_STREAMS_PER_CLIENT,
  DEFAULT_REGISTRATION_RATE,
  type ClientServiceOptions,
  type ClientServiceHandle,
  type ReceiveStats,
  type RegistrationPolicy,
} from "./client-service.js";
export { ClientAuthVerifier, MIN_NONCE_LENGTH, MAX_NONCE_LENGTH, MAX_CLIENT_ID_LENGTH } from "./client-auth.js";
export {
  checkRegistrationCredential,
  generateIssuerKeyPair,
  issueRegistrationCredential,
  parseIssuerPrivateKey,
  parseIssuerPublicKeys,
  RegistrationKeyError,
  type CredentialCheck,
} from "./registration.js";
export {
  createFanoutService,
  type FanoutServiceOptions,
  type FanoutServiceHandle,
  type FanoutRejection,
  type FanoutStats,
} from "./fanout-service.js";
export {
  processFanoutRequest,
  processedHighWater,
  fanoutSource,
  GuestConsumer,
  type GuestDeps,
  type GuestConsumerOptions,
  type FanoutOutcome,
  type HubStatus,
} from "./guest.js";
export {
  loadPeers,
  parsePeers,
  createPeerTransport,
  PeerDirectory,
  PeerTransports,
  PeersConfigError,
  type Peer,
  type OwnTls,
  type PeerTransportOptions,
} from "./peers.js";
export {
  FanoutTokenKeys,
  FanoutTokenKeyError,
  FANOUT_TOKEN_LENGTH,
  FANOUT_TOKEN_VERSION,
  ClientAuthDataError,
  decodeClientAuthData,
  encodeClientAuthData,
  newClientAuthData,
  tokenAccepted,
  revokeTokens,
  issueToken,
  type ClientAuthData,
  type TokenClaims,
} from "./tokens.js";
export {
  loadLocalClient,
  checkToken,
  rotateFanoutToken,
  updateBlocks,
  updateClientAuth,
  UnknownLocalClientError,
  type LocalClient,
  type TokenCheck,
  type BlockChange,
} from "./clients.js";
export { localClientDirectory } from "./local-directory.js";
export { startOutboxPurge, DEFAULT_OUTBOX_RETENTION, type OutboxRetention, type OutboxPurge } from "./outbox-purge.js";
export { streamQueue, DEFAULT_PAGE_SIZE, DEFAULT_PAGE_BYTES, type QueueStreamOptions, type StreamBufferAccount } from "./queue-stream.js";
export { startPurger, type Purger } from "./maintenance.js";
