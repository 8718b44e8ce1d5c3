// The hub's view of this domain's registered clients (the LocalClients port
// of src/ds/local-clients.ts): the registered key and suite from the client
// record, and the same token and block checks the guest side applies to a
// DSFanoutRequest (guest.ts), so that a local recipient is held to what a
// remote one is.
import type { LocalClients, RecipientCheck, RegisteredClient } from "../ds/local-clients.js";
import type { Store } from "../store/port.js";
import { checkToken, loadLocalClient } from "./clients.js";
import type { FanoutTokenKeys } from "./tokens.js";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

export function localClientDirectory(options: {
  readonly store: Store;
  readonly tokens: FanoutTokenKeys;
  /** This DS's domain (a client blocking it refuses the groups it hosts). */
  readonly domain: string;
  readonly now?: () => number;
}): LocalClients {
  const { store, tokens } = options;
  const domain = options.domain.toLowerCase();
  const now = options.now ?? Date.now;
  return {
    async registration(clientId): Promise<RegisteredClient | undefined> {
      const client = await loadLocalClient(store, clientId);
      if (client === undefined) return undefined;
      return {
        signaturePublicKey: client.record.signaturePublicKey,
        cipherSuite: client.auth.cipherSuite,
        checkRecipient(token, groupId): RecipientCheck {
          if (checkToken(tokens, client, clientId, token, now()) !== "ok") return "invalid_token";
          const g = hex(groupId);
          if (client.auth.blockedDomains.includes(domain) || client.auth.blockedGroups.some((b) => hex(b) === g)) return "blocked";
          return "ok";
        },
      };
    },
  };
}
