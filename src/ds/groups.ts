// The hosted groups: parsed public state kept hot in a bounded cache, loaded
// from the store (snapshot + epoch log + pending proposals) on a miss, and one
// request at a time per group on this instance. Across instances the store's
// compare-and-set on the epoch keeps one linear order.
import {
  decodeGroupState,
  epochOf,
  members,
  merge,
  processMessage,
  replay,
  type EngineOptions,
  domainOf,
  type GroupState,
  type Member,
  type StagedCommit,
} from "../mls/index.js";
import { EpochConflictError, UnknownGroupError } from "../store/errors.js";
import type { LoadedGroup, Store, WriteOp } from "../store/port.js";
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

  with(next: { state?: GroupState; tokens?: ReadonlyMap<string, Uint8Array>; logLength?: number; metadata?: GroupMetadata; members?: MembershipChange }): HostedGroup {
    const byDomain = this.byDomainCache !== undefined && (next.state === undefined || next.members !== undefined) ? this.byDomainAfter(this.byDomainCache, next.members) : undefined;
    return new HostedGroup(this.key, next.state ?? this.state, next.metadata ?? this.metadata, next.tokens ?? this.tokens, next.logLength ?? this.logLength, byDomain);
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
  /** The hub's domain: its clients in a loaded group are checked for a feed membership. */
  readonly localDomain?: string;
}

export class GroupRegistry {
  private readonly cache = new Map<string, HostedGroup>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly maxCached: number;

  constructor(
    private readonly store: Store,
    private readonly options: GroupRegistryOptions = {},
  ) {
    this.maxCached = options.maxCached ?? 1000;
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
    if (hit !== undefined) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
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
    const hit = this.cache.get(key);
    if (hit !== undefined && (await this.store.groupEpoch(key)) !== hit.epoch) this.cache.delete(key);
    return this.get(key);
  }

  /** Whether the group is in the cache (a get() would not touch the store). */
  has(key: string): boolean {
    return this.cache.has(key);
  }

  put(group: HostedGroup): void {
    this.cache.delete(group.key);
    this.cache.set(group.key, group);
    while (this.cache.size > this.maxCached) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }

  /** Forget a cached group (another instance changed it, or it was deleted). */
  evict(key: string): void {
    this.cache.delete(key);
  }

  private async load(key: string): Promise<HostedGroup | undefined> {
    const stored = await this.store.loadGroup(key);
    if (stored === undefined) return undefined;
    let state = await this.replayed(stored);
    // Proposals of the current epoch were validated when received; re-stage them.
    for (const p of await this.store.listProposals(key, epochOf(state))) state = await merge(state, await processMessage(state, p.proposal));
    const tokens = await this.store.fanoutTokens(key);
    const group = new HostedGroup(key, state, decodeGroupMetadata(stored.metadata), tokens, stored.log.length);
    if (this.options.localDomain !== undefined) await this.adoptFeedMembers(group, this.options.localDomain);
    return group;
  }

  private async replayed(stored: LoadedGroup): Promise<GroupState> {
    const snapshot = await decodeGroupState(stored.snapshot.state, this.options.engine);
    return replay(snapshot, stored.log.map((e) => decodeEpochLogRecord(e.entry)));
  }

  /** The group's state at an earlier epoch of its history (draft Section 7), rebuilt from the store. */
  async stateAt(key: string, epoch: bigint): Promise<GroupState | undefined> {
    const stored = await this.store.loadGroupAt(key, epoch);
    return stored === undefined ? undefined : this.replayed(stored);
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
