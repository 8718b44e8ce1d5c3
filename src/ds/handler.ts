// The port between the transport (src/server) and the DS operations (src/ds).
// The server hands over opaque DSRequest bytes and gets DSResponse bytes back;
// it never interprets the DS protocol itself.

/** What the transport knows about the caller, for authorization and rate limits. */
export interface RequestContext {
  /** DS domain of the peer, from its verified TLS client certificate (federation calls). */
  readonly peerDomain?: string;
  /** Remote address, for logs and rate limits. */
  readonly remoteAddress?: string;
  /** The call's id in every log line about it (the caller's x-request-id when well-formed). */
  readonly requestId?: string;
}

/** Result of handling one DSRequest. */
export interface HandledRequest {
  /** TLS-serialized DSResponse (of type error when `error` is set). */
  readonly response: Uint8Array;
  /** Set when the DSResponse is an error, so the transport can pick the RPC status. */
  readonly error?: { readonly code: number; readonly message: string };
  /**
   * Set when the failure is the hub's own (store, stored data, a bug), not the
   * request's: the transport logs it at error level with the group it concerns.
   */
  readonly fault?: { readonly cause: unknown; readonly groupId?: string };
}

export interface DSRequestHandler {
  handle(dsRequest: Uint8Array, ctx: RequestContext): Promise<HandledRequest>;
}

/** What a hub tells group creators (HubService.HubInfo). */
export interface HubInfo {
  /** TLS-serialized ExternalSender of the hub for the requested ciphersuite. */
  readonly externalSender: Uint8Array;
  readonly protocolVersions: readonly number[];
  readonly fanoutSignatureKey: Uint8Array;
}

export interface HubInfoSource {
  /** Throws DSFailure-like errors for unknown ciphersuites. */
  hubInfo(cipherSuite: number): Promise<HubInfo>;
}
