// The guest DS's recipient checks (draft Section 6.2) done once per recipient
// set: a DSFanoutRequest lists every recipient of our domain with its
// FanoutAuthToken, and the list is the same for every message of a group's
// epoch. The verdict of a list (who is accepted, who refused and why) is
// cached by the list's exact bytes per (hub, group); a changed list is checked
// again, reusing the results of the recipients whose token did not change.
//
// A verdict depends on the recipients' client records (registered, token
// not revoked, blocks), on the time (a token accepted in a revocation's grace
// period) and on the hub and group (blocks). Records: every putClient and
// removeClient increases the store's clientsVersion, read before each check,
// and a new version drops every cached result (across instances sharing the
// store too). Time: a result accepted through a grace period is kept only
// until that period ends.
import { createHash } from "node:crypto";
import { domainOf } from "../mls/index.js";
import type { Store } from "../store/port.js";
import {
  type ClientID,
  type FanoutAuthToken,
  clientIdCodec,
  decodeWith,
  fanoutAuthTokenCodec,
  struct,
  vectorV,
  WireDecodeError,
} from "../wire/index.js";
import { loadLocalClient } from "./clients.js";
import { tokenAccepted, type FanoutTokenKeys } from "./tokens.js";

/** What a guest thinks of one DSFanoutRequest's recipient list. */
export interface RecipientVerdict {
  /** Distinct accepted client ids, in list order. */
  readonly accepted: readonly string[];
  readonly unknown: readonly ClientID[];
  readonly badToken: readonly ClientID[];
  readonly blocked: readonly ClientID[];
  /** Distinct recipients listed. */
  readonly distinct: number;
  /** Names the accepted set (a digest of the sorted ids): the set a guest feed follows. */
  readonly setId: string;
}

export interface RecipientDeps {
  readonly domain: string;
  readonly store: Store;
  readonly tokens: FanoutTokenKeys;
  /** The rfc9420 client policy: an empty token is accepted for a registered client (GuestDeps.acceptTokenless). */
  readonly acceptTokenless?: boolean;
}

interface Section {
  readonly recipientIds: readonly ClientID[];
  readonly fanoutAuthTokens: readonly FanoutAuthToken[];
}
const sectionCodec = struct<Section>([
  ["recipient_ids", "recipientIds", vectorV(clientIdCodec)],
  ["fanout_auth_tokens", "fanoutAuthTokens", vectorV(fanoutAuthTokenCodec)],
]);

const OK = 0;
const UNKNOWN = 1;
const INVALID = 2;
const BLOCKED = 3;
type Outcome = typeof OK | typeof UNKNOWN | typeof INVALID | typeof BLOCKED;

interface ClientResult {
  readonly token: Uint8Array;
  readonly outcome: Outcome;
  /** Until when the outcome holds without a record change (a grace period's end, else Infinity). */
  readonly validUntil: number;
}

interface CachedSet {
  readonly section: Buffer;
  readonly verdict: RecipientVerdict;
  readonly validUntil: number;
}

interface GroupEntry {
  sets: CachedSet[];
  readonly clients: Map<string, ClientResult>;
}

export interface RecipientCheckLimits {
  /** Per-recipient results kept over all groups (default 500,000). */
  readonly maxClients?: number;
  /** Distinct lists kept per (hub, group) (default 8: the full list and a few without their sender). */
  readonly setsPerGroup?: number;
}

export interface RecipientCheckStats {
  /** Requests whose list was found in the cache. */
  hits: number;
  /** Requests whose list was checked (entirely or partly). */
  misses: number;
  /** Recipients whose token and record were actually checked. */
  verified: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);

export function recipientSetId(accepted: readonly string[]): string {
  const h = createHash("sha256");
  for (const id of [...accepted].sort()) h.update(id).update("\n");
  return h.digest("base64url");
}

export class RecipientChecks {
  readonly stats: RecipientCheckStats = { hits: 0, misses: 0, verified: 0 };
  readonly #groups = new Map<string, GroupEntry>();
  readonly #maxClients: number;
  readonly #setsPerGroup: number;
  #version: bigint | undefined;

  constructor(limits: RecipientCheckLimits = {}) {
    this.#maxClients = limits.maxClients ?? 500_000;
    this.#setsPerGroup = limits.setsPerGroup ?? 8;
  }

  /**
   * The verdict on `section` (recipient_ids<V> || fanout_auth_tokens<V> of a
   * request from `hub` whose message has `groupId`, if in clear), or the reason
   * the section is malformed. Call only for requests whose signature verified.
   */
  async verdict(deps: RecipientDeps, hub: string, groupId: Uint8Array | undefined, section: Uint8Array, now: number): Promise<RecipientVerdict | { readonly malformed: string }> {
    const version = await deps.store.clientsVersion();
    if (this.#version === undefined || version > this.#version) this.#clear(version);
    // An older version than the cache's (a concurrent call read it before a change): no cache at all.
    const useCache = version === this.#version;
    const key = `${hub}\n${groupId !== undefined ? hex(groupId) : ""}`;
    let entry = useCache ? this.#groups.get(key) : undefined;
    if (entry !== undefined) {
      // Most recently used last.
      this.#groups.delete(key);
      this.#groups.set(key, entry);
      const hit = entry.sets.find((s) => sameBytes(section, s.section));
      if (hit !== undefined && now < hit.validUntil) {
        this.stats.hits++;
        return hit.verdict;
      }
    }
    this.stats.misses++;

    let parsed: Section;
    try {
      parsed = decodeWith(sectionCodec, section, "DSFanoutRequest");
    } catch (err) {
      if (err instanceof WireDecodeError) return { malformed: `DSFanoutRequest does not decode: ${err.message}` };
      throw err;
    }
    if (parsed.recipientIds.length !== parsed.fanoutAuthTokens.length) {
      return { malformed: `${parsed.recipientIds.length} recipients but ${parsed.fanoutAuthTokens.length} tokens` };
    }

    const fresh = entry?.clients ?? new Map<string, ClientResult>();
    const accepted: string[] = [];
    const unknown: ClientID[] = [];
    const badToken: ClientID[] = [];
    const blocked: ClientID[] = [];
    const seen = new Set<string>();
    let validUntil = Number.POSITIVE_INFINITY;
    const groupHex = groupId !== undefined ? hex(groupId) : undefined;
    for (const [i, raw] of parsed.recipientIds.entries()) {
      let clientId: string;
      try {
        clientId = utf8.decode(raw);
      } catch {
        unknown.push(raw);
        continue;
      }
      if (seen.has(clientId)) continue;
      seen.add(clientId);
      if (domainOf(clientId) !== deps.domain.toLowerCase()) {
        unknown.push(raw);
        continue;
      }
      const token = parsed.fanoutAuthTokens[i]!.token;
      let r = fresh.get(clientId);
      if (r === undefined || !sameBytes(token, r.token) || now >= r.validUntil) {
        r = await this.#check(deps, hub, groupHex, clientId, token, now);
        fresh.set(clientId, r);
      }
      validUntil = Math.min(validUntil, r.validUntil);
      if (r.outcome === OK) accepted.push(clientId);
      else if (r.outcome === UNKNOWN) unknown.push(raw);
      else if (r.outcome === INVALID) badToken.push(raw);
      else blocked.push(raw);
    }
    const verdict: RecipientVerdict = { accepted, unknown, badToken, blocked, distinct: seen.size, setId: recipientSetId(accepted) };

    if (useCache && version === this.#version) {
      // (Re)attached: a concurrent call may have evicted it meanwhile.
      if (entry === undefined || this.#groups.get(key) !== entry) {
        entry = { sets: entry?.sets ?? [], clients: fresh };
        this.#groups.set(key, entry);
      }
      entry.sets = [...entry.sets.filter((s) => !sameBytes(section, s.section)).slice(-(this.#setsPerGroup - 1)), { section: Buffer.from(section), verdict, validUntil }];
      this.#evict(key);
    }
    return verdict;
  }

  async #check(deps: RecipientDeps, hub: string, groupHex: string | undefined, clientId: string, token: Uint8Array, now: number): Promise<ClientResult> {
    this.stats.verified++;
    const copy = new Uint8Array(token);
    const client = await loadLocalClient(deps.store, clientId);
    if (client === undefined) return { token: copy, outcome: UNKNOWN, validUntil: Number.POSITIVE_INFINITY };
    const tokenless = token.length === 0 && deps.acceptTokenless === true;
    const claims = tokenless ? undefined : deps.tokens.verify(clientId, token);
    if (!tokenless && (claims === undefined || !tokenAccepted(client.auth, claims, now))) return { token: copy, outcome: INVALID, validUntil: Number.POSITIVE_INFINITY };
    if (client.auth.blockedDomains.includes(hub) || (groupHex !== undefined && client.auth.blockedGroups.some((g) => hex(g) === groupHex))) {
      return { token: copy, outcome: BLOCKED, validUntil: Number.POSITIVE_INFINITY };
    }
    // Accepted only through a revocation's grace period: until it ends.
    const graceOnly = claims !== undefined && claims.issuedAt < client.auth.tokensNotBefore;
    return { token: copy, outcome: OK, validUntil: graceOnly ? client.auth.graceUntil : Number.POSITIVE_INFINITY };
  }

  #clear(version: bigint): void {
    this.#groups.clear();
    this.#version = version;
  }

  /** Drop least recently used groups (never `keep`) until the per-recipient results fit. */
  #evict(keep: string): void {
    let total = 0;
    for (const e of this.#groups.values()) total += e.clients.size;
    for (const [key, e] of this.#groups) {
      if (total <= this.#maxClients) return;
      if (key === keep) continue;
      total -= e.clients.size;
      this.#groups.delete(key);
    }
  }
}
