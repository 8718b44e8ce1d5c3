// The hosted groups: parsed public state kept hot in a bounded cache, loaded
// from the store (snapshot + epoch log + pending proposals) on a miss, and one
// request at a time per group on this instance. Across instances the store's
// compare-and-set on the epoch keeps one linear order.
import {
  decodeGroupState,
  encodeGroupState,
  epochOf,
  members,
  replay,
  type EngineOptions,
  domainOf,
  type GroupState,
  type Member,
  type StagedCommit,
} from "../mls/index.js";
import { EpochConflictError, UnknownGroupError } from "../store/errors.js";
import type { LoadedGroup, Store, WriteOp } from "../store/port.js";
import { GroupStateLostError } from "./errors.js";
import { proposedAtOf } from "./proposals.js";
import { GroupCache, type EncodedSize } from "./group-cache.js";
import { decodeEpochLogRecord, decodeGroupMetadata, type GroupMetadata } from "./records.js";

/** The store key of an MLS group_id. */
export const groupKey = (groupId: Uint8Array): string => Buffer.from(groupId).toString("base64url");

/** Members of one domain, in leaf order. */
export interface DomainMembers {
  readonly clientIds: readonly string[];
  readonly leafIndices: readonly number[];
}

/** Who a commit brought in and took out, by leaf (a client whose identifier changed is both). */
export interface MembershipChange {
  readonly added: readonly { readonly leafIndex: number; readonly clientId: string }[];
  readonly removed: readonly { readonly leafIndex: number; readonly clientId: string }[];
}

/** A state change that adds and removes no one (a stored proposal). */
export const NO_CHANGE: MembershipChange = { added: [], removed: [] };

export function membershipChange(staged: StagedCommit): MembershipChange {
  const renamed = staged.updated.filter((u) => u.previousClientId !== u.clientId);
  return {
    added: [...staged.added, ...(staged.externalJoiner !== undefined ? [staged.externalJoiner] : []), ...renamed],
    removed: [...staged.removed, ...renamed.map((u) => ({ leafIndex: u.leafIndex, clientId: u.previousClientId }))],
  };
}

interface ByDomain {
  readonly fallback: string;
  /** Members per domain, every domain (the fallback one included). */
  readonly counts: ReadonlyMap<string, number>;
  /**
   * The members of every other domain than the fallback (the hub's own), kept
   * up to date commit by commit: fanout lists them in each DSFanoutRequest.
   * The hub's own members are one feed entry whatever their number; only
   * their count is needed, so their list (100,000 entries in the biggest
   * groups) is not copied on every commit.
   */
  readonly remote: ReadonlyMap<string, DomainMembers>;
}

export class HostedGroup {
  private byDomainCache?: ByDomain;
  /** The fallback domain's list, made on demand for this state only. */
  private localList?: DomainMembers;

  constructor(
    readonly key: string,
    readonly state: GroupState,
    readonly metadata: GroupMetadata,
    /** FanoutAuthToken of every member, by client identifier. */
    readonly tokens: ReadonlyMap<string, Uint8Array>,
    /** Accepted commits since the store's last snapshot. */
    readonly logLength: number,
    byDomain?: ByDomain,
    /** When each pending proposal was stored (ms), by ref (latin1); see src/ds/proposals.ts. */
    readonly proposedAt: ReadonlyMap<string, number> = new Map(),
  ) {
    if (byDomain !== undefined) this.byDomainCache = byDomain;
  }

  get epoch(): bigint {
    return epochOf(this.state);
  }

  /** Members per domain (members without a domain count for `fallbackDomain`); kept up to date commit by commit. */
  domainCounts(fallbackDomain: string): ReadonlyMap<string, number> {
    return this.grouping(fallbackDomain).counts;
  }

  /** Members of the domains other than `fallbackDomain`, in leaf order; kept up to date commit by commit. */
  remoteDomains(fallbackDomain: string): ReadonlyMap<string, DomainMembers> {
    return this.grouping(fallbackDomain).remote;
  }

  /** Members grouped by domain, in leaf order (the fallback domain's list is made for this call's state). */
  byDomain(fallbackDomain: string): ReadonlyMap<string, DomainMembers> {
    const g = this.grouping(fallbackDomain);
    const out = new Map<string, DomainMembers>();
    for (const d of g.counts.keys()) {
      if (d !== fallbackDomain) out.set(d, g.remote.get(d)!);
      else out.set(d, (this.localList ??= this.scan(fallbackDomain).local));
    }
    return out;
  }

  private grouping(fallbackDomain: string): ByDomain {
    if (this.byDomainCache === undefined || this.byDomainCache.fallback !== fallbackDomain) {
      const { counts, remote, local } = this.scan(fallbackDomain);
      this.byDomainCache = { fallback: fallbackDomain, counts, remote };
      this.localList = local;
    }
    return this.byDomainCache;
  }

  private scan(fallbackDomain: string): { counts: Map<string, number>; remote: Map<string, DomainMembers>; local: DomainMembers } {
    const lists = new Map<string, { clientIds: string[]; leafIndices: number[] }>();
    for (const member of members(this.state)) {
      const d = member.domain ?? fallbackDomain;
      let e = lists.get(d);
      if (e === undefined) lists.set(d, (e = { clientIds: [], leafIndices: [] }));
      e.clientIds.push(member.clientId);
      e.leafIndices.push(member.leafIndex);
    }
    const counts = new Map([...lists].map(([d, e]) => [d, e.clientIds.length] as const));
    const remote = new Map([...lists].filter(([d]) => d !== fallbackDomain));
    return { counts, remote, local: lists.get(fallbackDomain) ?? { clientIds: [], leafIndices: [] } };
  }

  with(next: {
    state?: GroupState;
    tokens?: ReadonlyMap<string, Uint8Array>;
    logLength?: number;
    metadata?: GroupMetadata;
    members?: MembershipChange;
    proposedAt?: ReadonlyMap<string, number>;
  }): HostedGroup {
    const byDomain = this.byDomainCache !== undefined && (next.state === undefined || next.members !== undefined) ? this.byDomainAfter(this.byDomainCache, next.members) : undefined;
    // A new epoch starts without pending proposals.
    const proposedAt = next.proposedAt ?? (next.state !== undefined && epochOf(next.state) !== this.epoch ? new Map() : this.proposedAt);
    return new HostedGroup(this.key, next.state ?? this.state, next.metadata ?? this.metadata, next.tokens ?? this.tokens, next.logLength ?? this.logLength, byDomain, proposedAt);
  }

  /** The grouping after a commit: counts, and the lists of the remote domains it touched (cost of the change, not of the group). */
  private byDomainAfter(before: ByDomain, change: MembershipChange | undefined): ByDomain {
    if (change === undefined || (change.added.length === 0 && change.removed.length === 0)) return before;
    const counts = new Map(before.counts);
    const remote = new Map(before.remote);
    const touched = new Map<string, { clientIds: string[]; leafIndices: number[] }>();
    const domain = (clientId: string) => domainOf(clientId) ?? before.fallback;
    const entry = (d: string) => {
      let e = touched.get(d);
      if (e === undefined) {
        const old = remote.get(d);
        touched.set(d, (e = { clientIds: [...(old?.clientIds ?? [])], leafIndices: [...(old?.leafIndices ?? [])] }));
      }
      return e;
    };
    for (const r of change.removed) {
      const d = domain(r.clientId);
      counts.set(d, (counts.get(d) ?? 0) - 1);
      if (d === before.fallback) continue;
      const e = entry(d);
      const i = e.leafIndices.indexOf(r.leafIndex);
      if (i >= 0) (e.leafIndices.splice(i, 1), e.clientIds.splice(i, 1));
    }
    for (const a of change.added) {
      const d = domain(a.clientId);
      counts.set(d, (counts.get(d) ?? 0) + 1);
      if (d === before.fallback) continue;
      const e = entry(d);
      let i = e.leafIndices.length;
      while (i > 0 && e.leafIndices[i - 1]! > a.leafIndex) i--; // keep leaf order
      e.leafIndices.splice(i, 0, a.leafIndex);
      e.clientIds.splice(i, 0, a.clientId);
    }
    for (const [d, n] of counts) if (n <= 0) counts.delete(d);
    for (const [d, e] of touched) {
      if (e.clientIds.length === 0) remote.delete(d);
      else remote.set(d, e);
    }
    return { fallback: before.fallback, counts, remote };
  }
}

export interface GroupRegistryOptions {
  readonly engine?: EngineOptions;
  /** How many parsed groups stay in memory (least recently used leave first). */
  readonly maxCached?: number;
  /** Memory budget of the parsed groups, estimated from their encoded state (src/ds/group-cache.ts). */
  readonly maxCachedBytes?: number;
  /** The hub's domain: its clients in a loaded group are checked for a feed membership. */
  readonly localDomain?: string;
}

export class GroupRegistry {
  private readonly cache: GroupCache;
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Groups whose stored state cannot be rebuilt, by key (with the epoch the store held then). */
  private readonly lost = new Map<string, GroupStateLostError>();
  /** Encoded bytes of groups just loaded (snapshot + log + proposals), for their cache weight. */
  private readonly loadedBytes = new WeakMap<HostedGroup, number>();

  constructor(
    private readonly store: Store,
    private readonly options: GroupRegistryOptions = {},
  ) {
    this.cache = new GroupCache(options.maxCachedBytes ?? 512 * 1024 * 1024, options.maxCached ?? 1000);
  }

  /** Cached groups and their estimated bytes (metrics, tests). */
  get cacheUse(): { readonly groups: number; readonly bytes: number } {
    return { groups: this.cache.size, bytes: this.cache.weight };
  }

  /** Run `fn` with this group's lock held: requests for one group run one after another. */
  async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.locks.set(key, chain);
    await prev.catch(() => undefined);
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === chain) this.locks.delete(key);
    }
  }

  /** The group, from the cache or the store; undefined when it is not hosted here. */
  async get(key: string): Promise<HostedGroup | undefined> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit;
    const loaded = await this.load(key);
    if (loaded !== undefined) this.put(loaded);
    return loaded;
  }

  /**
   * Like get, but first asks the store for the group's epoch, so that a read
   * served from this instance's cache is never older than the last commit
   * another instance accepted.
   */
  async getFresh(key: string): Promise<HostedGroup | undefined> {
    const hit = this.cache.peek(key);
    if (hit !== undefined && (await this.store.groupEpoch(key)) !== hit.epoch) this.cache.delete(key);
    return this.get(key);
  }

  /** How many groups are cached (metrics); `bytes` once the cache accounts for memory. */
  cacheStats(): { readonly groups: number; readonly bytes?: number } {
    return { groups: this.cache.size, bytes: this.cache.weight };
  }

  /** Whether the group is in the cache (a get() would not touch the store). */
  has(key: string): boolean {
    return this.cache.has(key);
  }

  /** The cached group, without loading it or changing the cache order. */
  peek(key: string): HostedGroup | undefined {
    return this.cache.peek(key);
  }

  /** The group rebuilt from the store (snapshot, log, pending proposals), bypassing and not touching the cache. */
  async rebuiltFromStore(key: string): Promise<GroupState | undefined> {
    const stored = await this.store.loadGroup(key);
    if (stored === undefined) return undefined;
    return this.rebuild(stored, (await this.store.listProposals(key, stored.epoch)).map((p) => p.proposal));
  }

  /** Cache `group`; `size` says how its encoded state changed with the request (merge.ts), if known. */
  put(group: HostedGroup, size?: EncodedSize): void {
    const loaded = this.loadedBytes.get(group);
    this.cache.put(group, loaded !== undefined ? { bytes: loaded } : size, () => encodeGroupState(group.state).length);
  }

  /** Forget a cached group (another instance changed it, or it was deleted). */
  evict(key: string): void {
    this.cache.delete(key);
  }

  private async load(key: string): Promise<HostedGroup | undefined> {
    const lost = this.lost.get(key);
    if (lost !== undefined) {
      // Not retried while the store holds the same epoch (every request would replay again).
      if ((await this.store.groupEpoch(key)) === lost.storedEpoch) throw lost;
      this.lost.delete(key);
    }
    const stored = await this.store.loadGroup(key);
    if (stored === undefined) return undefined;
    // Proposals of the current epoch were validated when received; they replay like the log's.
    const pending = await this.store.listProposals(key, stored.epoch);
    let state: GroupState;
    try {
      state = await this.rebuild(stored, pending.map((p) => p.proposal));
    } catch (err) {
      if (err instanceof GroupStateLostError) this.lost.set(key, err);
      throw err;
    }
    const tokens = await this.store.fanoutTokens(key);
    const group = new HostedGroup(key, state, decodeGroupMetadata(stored.metadata), tokens, stored.log.length, undefined, proposedAtOf(pending));
    this.loadedBytes.set(group, stored.snapshot.state.length + stored.log.reduce((n, e) => n + e.entry.length, 0) + [...state.proposals.values()].reduce((n, p) => n + p.message.length, 0));
    if (this.options.localDomain !== undefined) await this.adoptFeedMembers(group, this.options.localDomain);
    return group;
  }

  /**
   * The state snapshot + log give: each log record's proposals, then its
   * commit, exactly as they were accepted; then `pending` (proposals of the
   * last epoch). Whatever fails here is the hub's own data, never the
   * request's: GroupStateLostError, with the last epoch that could be rebuilt.
   */
  private async rebuild(stored: LoadedGroup, pending: readonly Uint8Array[] = []): Promise<GroupState> {
    let state: GroupState;
    try {
      state = await decodeGroupState(stored.snapshot.state, this.options.engine);
    } catch (cause) {
      throw new GroupStateLostError(stored.groupId, stored.epoch, undefined, cause);
    }
    for (const e of stored.log) {
      try {
        const r = decodeEpochLogRecord(e.entry);
        state = await replay(state, [...r.proposals.map((message) => ({ message })), { message: r.message, ...(r.partialGroupInfo !== undefined ? { partialGroupInfo: r.partialGroupInfo } : {}) }]);
      } catch (cause) {
        throw new GroupStateLostError(stored.groupId, stored.epoch, epochOf(state), cause);
      }
      if (epochOf(state) !== e.epoch) throw new GroupStateLostError(stored.groupId, stored.epoch, epochOf(state), new Error(`log entry of epoch ${e.epoch} replayed to epoch ${epochOf(state)}`));
    }
    try {
      return await replay(state, pending.map((message) => ({ message })));
    } catch (cause) {
      throw new GroupStateLostError(stored.groupId, stored.epoch, epochOf(state), cause);
    }
  }

  /** The group's state at an earlier epoch of its history (draft Section 7), rebuilt from the store. */
  async stateAt(key: string, epoch: bigint): Promise<GroupState | undefined> {
    const stored = await this.store.loadGroupAt(key, epoch);
    return stored === undefined ? undefined : this.rebuild(stored);
  }

  /**
   * Local members without a feed membership (groups stored before feeds
   * existed) get one, so they receive the group's next messages. The epoch
   * precondition keeps it from racing a commit that changes the members.
   */
  private async adoptFeedMembers(group: HostedGroup, localDomain: string): Promise<void> {
    const local = group.byDomain(localDomain).get(localDomain)?.clientIds ?? [];
    if (local.length === 0) return;
    const receiving = new Set(await this.store.feedMembers(group.key));
    const missing = local.filter((c) => !receiving.has(c));
    if (missing.length === 0) return;
    const joins: WriteOp[] = missing.map((clientId) => ({ kind: "joinFeed", groupId: group.key, clientId }));
    try {
      await this.store.apply({ ops: [{ kind: "checkEpoch", groupId: group.key, epoch: group.epoch }, ...joins] });
    } catch (err) {
      // A commit got in first: the next load (of its state) adopts whoever is still missing.
      if (!(err instanceof EpochConflictError || err instanceof UnknownGroupError)) throw err;
    }
  }
}


export type { Member };
