// The port through which the hub asks about clients of its own domain: the
// signature key and cipher suite they registered, and whether a
// FanoutAuthToken is one this DS issued to them and still accepts. The
// delivery layer implements it (src/delivery/local-directory.ts), because the
// token scheme and the client record's encoding are its business; the domain
// layer only asks, so it does no I/O of its own.

/** What the checks of a guest DS (src/delivery/guest.ts) say about a recipient and its token. */
export type RecipientCheck = "ok" | "invalid_token" | "blocked";

export interface RegisteredClient {
  /** The key the client registered (ClientService.Register); its leaves must carry it. */
  readonly signaturePublicKey: Uint8Array;
  /** The cipher suite whose signature scheme verifies the client's own signatures. */
  readonly cipherSuite: number;
  /**
   * The guest DS's checks for a message of group `groupId` to this client
   * carrying `token`: the token was issued to this client by this DS and is
   * not revoked, and the client blocks neither the group nor this hub.
   */
  checkRecipient(token: Uint8Array, groupId: Uint8Array): RecipientCheck;
}

export interface LocalClients {
  /** The registration of a client of this domain, or undefined when it is not registered. */
  registration(clientId: string): Promise<RegisteredClient | undefined>;
}
