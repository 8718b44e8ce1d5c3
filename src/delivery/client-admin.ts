// The operator's handle on this DS's own clients (AdminService
// RevokeFanoutTokens and UpdateBlocks): revoking a client's FanoutAuthTokens
// and changing what it refuses by fanout, on top of the library functions in
// clients.ts, with the checks an RPC needs (whose client, well-formed lists,
// bounded records).
import { Code, ConnectError } from "@connectrpc/connect";
import { domainOf } from "../mls/identity.js";
import type { ClientAdmin } from "../server/admin.js";
import type { Store } from "../store/port.js";
import { UnknownLocalClientError, updateClientAuth, withBlockChange } from "./clients.js";
import { mapped } from "./errors.js";
import { revokeTokens } from "./tokens.js";

/** Entries one call may add or remove, and blocks one client may hold, per kind. */
export const MAX_BLOCK_CHANGES = 100;
export const MAX_BLOCKS = 1000;
/** The longest grace period a revocation may grant (a year). */
export const MAX_GRACE_MS = 365 * 24 * 3600 * 1000;
const MAX_GROUP_ID_BYTES = 1024;
const dnsName = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

const invalid = (message: string): never => {
  throw new ConnectError(message, Code.InvalidArgument);
};

export function createClientAdmin(o: { readonly domain: string; readonly store: Store; readonly now?: () => number }): ClientAdmin {
  const now = o.now ?? Date.now;
  const local = (clientId: string): void => {
    if (clientId === "") invalid("client_id is empty");
    const domain = domainOf(clientId);
    if (domain !== o.domain) throw new ConnectError(`${clientId} is not a client of ${o.domain}${domain !== undefined ? ` but of ${domain}` : ""}`, Code.PermissionDenied);
  };
  const known = async <T>(clientId: string, f: () => Promise<T>): Promise<T> => {
    try {
      return await mapped(f);
    } catch (err) {
      if (err instanceof UnknownLocalClientError) throw new ConnectError(`${clientId} is not registered here`, Code.NotFound);
      throw err;
    }
  };
  return {
    async revokeFanoutTokens(clientId, graceMs) {
      local(clientId);
      if (!Number.isSafeInteger(graceMs) || graceMs < 0 || graceMs > MAX_GRACE_MS) invalid(`grace_period_ms must be at most ${MAX_GRACE_MS} (a year)`);
      const auth = await known(clientId, () => updateClientAuth(o.store, clientId, (a) => revokeTokens(a, now(), graceMs)));
      return { tokensNotBefore: auth.tokensNotBefore, graceUntil: auth.graceUntil };
    },
    async updateBlocks(clientId, change) {
      local(clientId);
      const domains = [...(change.blockDomains ?? []), ...(change.unblockDomains ?? [])];
      const groups = [...(change.blockGroups ?? []), ...(change.unblockGroups ?? [])];
      if (domains.length > MAX_BLOCK_CHANGES || groups.length > MAX_BLOCK_CHANGES) invalid(`at most ${MAX_BLOCK_CHANGES} domains and ${MAX_BLOCK_CHANGES} groups per call`);
      for (const d of domains) if (!dnsName.test(d.toLowerCase())) invalid(`not a DS domain (a DNS name): ${JSON.stringify(d)}`);
      for (const g of groups) if (g.length === 0 || g.length > MAX_GROUP_ID_BYTES) invalid(`a group id has ${g.length} bytes (1 to ${MAX_GROUP_ID_BYTES})`);
      const auth = await known(clientId, () =>
        updateClientAuth(o.store, clientId, (a) => {
          const next = withBlockChange(a, change);
          // Checked before the record is written: a refused change changes nothing.
          if (next.blockedDomains.length > MAX_BLOCKS || next.blockedGroups.length > MAX_BLOCKS) {
            throw new ConnectError(`a client may block at most ${MAX_BLOCKS} domains and ${MAX_BLOCKS} groups`, Code.ResourceExhausted);
          }
          return next;
        }),
      );
      return { blockedDomains: auth.blockedDomains, blockedGroups: auth.blockedGroups };
    },
  };
}
