// The storage port of the DS. The DS processes a request purely
// ((state + request) -> (result + effects)) and hands all of the request's
// effects to `Store.apply` as one StoreWrite, which the adapter applies in one
// transaction: the request is acknowledged only after its state change and all
// fanout it causes are durable. Reads never see half a batch.
//
// Everything the store keeps is either a small typed record or opaque bytes the
// DS (or the MLS engine) encodes: the store never parses MLS.
//
// Conventions:
// - ids are strings. Group ids are the DS's text form of the MLS group_id
//   (e.g. base64url); client ids are the client identifiers as text.
// - epochs and queue sequence numbers are bigint (uint64 on the wire);
//   adapters may reject values >= 2^63 with StoreRangeError.
// - times are milliseconds since the Unix epoch (number).
// - KeyPackageRefs and ProposalRefs are the raw hash bytes (RFC 9420 5.2).

// ---------------------------------------------------------------------------
// Groups

/** One accepted commit, as the engine wants to replay it (opaque bytes). */
export interface EpochLogEntry {
  /** The epoch this commit produced (the group's epoch after applying it). */
  readonly epoch: bigint;
  readonly entry: Uint8Array;
  readonly createdAt: number;
}

/** A full serialized public group state (opaque bytes) at `epoch`. */
export interface GroupSnapshot {
  readonly epoch: bigint;
  readonly state: Uint8Array;
}

/**
 * What `loadGroup` returns: replay `log` (ascending epochs, all > snapshot.epoch)
 * on top of `snapshot` to get the state at `epoch`.
 */
export interface LoadedGroup {
  readonly groupId: string;
  /** Current epoch; equals the last log entry's epoch, or snapshot.epoch if the log is empty. */
  readonly epoch: bigint;
  readonly snapshot: GroupSnapshot;
  readonly log: readonly EpochLogEntry[];
  /** Opaque DS metadata (policy, creator, ...); empty when never set. */
  readonly metadata: Uint8Array;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** A pending proposal by reference, valid for one epoch. */
export interface StoredProposal {
  readonly epoch: bigint;
  readonly ref: Uint8Array;
  /** The MLSMessage carrying the proposal (opaque). */
  readonly proposal: Uint8Array;
  /** When it was stored (ms); 0 for proposals stored before schema v5. */
  readonly createdAt: number;
}

/**
 * Epoch history for joiners (draft Section 7): the state that clients added in
 * `epoch` need to join by Welcome, kept until each joiner fetched it or it expires.
 */
export interface HistoryEntry {
  readonly groupId: string;
  readonly epoch: bigint;
  /**
   * TLS-serialized ratchet tree of `epoch` (optional<Node> ratchet_tree<V>), or
   * empty: then the tree is the state of that epoch, from loadGroupAt.
   */
  readonly ratchetTree: Uint8Array;
  /** GroupInfo (or other joiner data) of `epoch`, opaque; empty if not kept. */
  readonly groupInfo: Uint8Array;
  /** KeyPackageRefs of the joiners that have not fetched it yet. */
  readonly joiners: readonly Uint8Array[];
  readonly expiresAt: number;
}

// ---------------------------------------------------------------------------
// Local clients and their KeyPackages

export interface ClientRecord {
  readonly clientId: string;
  /** Signature public key used to verify the client's requests (ClientAuth). */
  readonly signaturePublicKey: Uint8Array;
  /** FanoutAuthToken secret / metadata of this DS for the client (opaque). */
  readonly authData: Uint8Array;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface KeyPackageUpload {
  readonly ref: Uint8Array;
  readonly ciphersuite: number;
  /** The serialized KeyPackage (MLSMessage or bare, as the DS chooses). */
  readonly keyPackage: Uint8Array;
  /** KeyPackage lifetime not_after, in ms; expired ones are never handed out. */
  readonly expiresAt?: number;
}

export interface StoredKeyPackage {
  readonly clientId: string;
  readonly ref: Uint8Array;
  readonly ciphersuite: number;
  readonly keyPackage: Uint8Array;
  readonly lastResort: boolean;
  readonly expiresAt?: number;
}

// ---------------------------------------------------------------------------
// Queues

/**
 * A queue is named by a string. Two uses share the abstraction: one queue per
 * local client (its inbox) and one outbox per destination domain (fanout to
 * guest DSs). Use the helpers so names never collide.
 */
export type QueueId = string;
export const clientQueue = (clientId: string): QueueId => `client:${clientId}`;
export const outboxQueue = (domain: string): QueueId => `outbox:${domain.toLowerCase()}`;
/**
 * A group's feed: one entry per message to the group's local members, however
 * many there are (fan-in on read). Each local member has a cursor into it
 * (joinFeed / leaveFeed), and pullFeeds copies what it has not received yet
 * into its own queue when it reads, so a message costs one row at send time.
 */
export const groupFeed = (groupId: string): QueueId => `feed:${groupId}`;
export const isGroupFeed = (queue: QueueId): boolean => queue.startsWith("feed:");

export interface QueueEntry {
  /** Gap-free per queue: 1, 2, 3, ... in append (commit) order. */
  readonly seq: bigint;
  readonly payload: Uint8Array;
  readonly enqueuedAt: number;
  /**
   * Set when the entry was appended with an EntryPrefix: `payload` starts with
   * its `length` bytes, and `id` names the stored prefix: entries with the
   * same id start with the same bytes (a prefix's ref identifies its bytes),
   * so a reader can tell entries that share a prefix without comparing it.
   */
  readonly prefix?: EntryPrefixRead;
}

export interface QueueInfo {
  /** Highest sequence ever assigned (0n for a queue never appended to). */
  readonly lastSeq: bigint;
  /** Sequence of the oldest unacknowledged entry, or undefined when empty. */
  readonly firstSeq: bigint | undefined;
  /** Number of unacknowledged entries. */
  readonly length: number;
}

/** Called after a committed append, with the queue's new last sequence. */
export type AppendListener = (lastSeq: bigint) => void;
export type Unsubscribe = () => void;

// ---------------------------------------------------------------------------
// Rate limits

export interface RateLimitRule {
  /** Max total cost per window. */
  readonly limit: number;
  readonly windowMs: number;
  /** Cost of this hit (default 1). */
  readonly cost?: number;
}

export interface RateLimitResult {
  readonly allowed: boolean;
  /** Cost counted in the current window, including this hit if allowed. */
  readonly count: number;
  readonly remaining: number;
  /** When the current window ends (ms). */
  readonly resetAt: number;
}

// ---------------------------------------------------------------------------
// The write batch

/** Create a group; fails with GroupExistsError if present, or deleted with a tombstone that has not expired. */
export interface CreateGroupOp {
  readonly kind: "createGroup";
  readonly groupId: string;
  readonly epoch: bigint;
  readonly snapshot: Uint8Array;
  readonly metadata?: Uint8Array;
  /**
   * Who the group counts against (its creator) and how many live groups that
   * owner may have: with `maxGroups` groups of `clientId` already stored the
   * batch fails with QuotaExceededError. A deleted group stops counting.
   */
  readonly owner?: { readonly clientId: string; readonly maxGroups: number };
}

/**
 * Compare-and-set advance by one accepted commit: the group must be at
 * `expectedEpoch` (else EpochConflictError with the current epoch); it moves to
 * expectedEpoch + 1 (MLS epochs advance by exactly one per commit), the log
 * entry is appended, and pending proposals of older epochs are cleared.
 * With `snapshot` (the full state at the new epoch) the snapshot is replaced and
 * the log up to the new epoch is dropped, except what the group's epoch history
 * still needs (see loadGroupAt): the newest older snapshot at or before its
 * oldest epoch and the log after it are kept until those entries go.
 */
export interface AdvanceGroupOp {
  readonly kind: "advanceGroup";
  readonly groupId: string;
  readonly expectedEpoch: bigint;
  readonly logEntry: Uint8Array;
  readonly snapshot?: Uint8Array;
  readonly metadata?: Uint8Array;
}

/** Replace the snapshot at the current epoch (compaction); `epoch` is a CAS precondition. */
export interface SnapshotGroupOp {
  readonly kind: "snapshotGroup";
  readonly groupId: string;
  readonly epoch: bigint;
  readonly snapshot: Uint8Array;
}

/** Replace the group's metadata, optionally guarded by an epoch precondition. */
export interface SetGroupMetadataOp {
  readonly kind: "setGroupMetadata";
  readonly groupId: string;
  readonly expectedEpoch?: bigint;
  readonly metadata: Uint8Array;
}

/**
 * Precondition only: the group exists and is at `epoch`. Used by writes that do
 * not advance the epoch but are only valid in it (storing a proposal, fanning
 * out an application message of that epoch).
 */
export interface CheckEpochOp {
  readonly kind: "checkEpoch";
  readonly groupId: string;
  readonly epoch: bigint;
}

/**
 * Delete a group and everything hanging off it (log, snapshot, proposals,
 * history, tokens). With `tombstoneUntil` (ms) the id stays taken until then:
 * createGroup of it fails (a replayed create_group must not bring it back).
 */
export interface DeleteGroupOp {
  readonly kind: "deleteGroup";
  readonly groupId: string;
  readonly expectedEpoch?: bigint;
  readonly tombstoneUntil?: number;
}

/** Store a pending proposal for `epoch` (idempotent per ref). Group must exist. */
export interface AddProposalOp {
  readonly kind: "addProposal";
  readonly groupId: string;
  readonly epoch: bigint;
  readonly ref: Uint8Array;
  readonly proposal: Uint8Array;
}

/** Drop one pending proposal (e.g. the DS rescinds it). */
export interface RemoveProposalOp {
  readonly kind: "removeProposal";
  readonly groupId: string;
  readonly ref: Uint8Array;
}

/** Record the joiner state of an epoch in which clients were added. Replaces an entry of the same epoch. */
export interface AddHistoryOp {
  readonly kind: "addHistory";
  readonly groupId: string;
  readonly epoch: bigint;
  /** The tree, or omitted: the store keeps the snapshot and log to rebuild the epoch (loadGroupAt). */
  readonly ratchetTree?: Uint8Array;
  readonly groupInfo?: Uint8Array;
  readonly joiners: readonly Uint8Array[];
  readonly expiresAt: number;
}

/**
 * A joiner fetched (or no longer needs) its history: remove its record (in all
 * epochs, or only `epoch`); an entry without joiners left is deleted.
 */
export interface RemoveHistoryJoinerOp {
  readonly kind: "removeHistoryJoiner";
  readonly groupId: string;
  readonly keyPackageRef: Uint8Array;
  readonly epoch?: bigint;
}

/** Set (on add) or replace (on update) a member's FanoutAuthToken. Group must exist. */
export interface SetFanoutTokenOp {
  readonly kind: "setFanoutToken";
  readonly groupId: string;
  readonly clientId: string;
  readonly token: Uint8Array;
}

/** Remove a member's FanoutAuthToken (on remove). Absent is not an error. */
export interface RemoveFanoutTokenOp {
  readonly kind: "removeFanoutToken";
  readonly groupId: string;
  readonly clientId: string;
}

/** Register or replace a local client. */
export interface PutClientOp {
  readonly kind: "putClient";
  readonly clientId: string;
  readonly signaturePublicKey: Uint8Array;
  readonly authData?: Uint8Array;
}

/** Remove a local client with its KeyPackages (its queue is left; delete it with deleteQueue). */
export interface RemoveClientOp {
  readonly kind: "removeClient";
  readonly clientId: string;
}

/**
 * Publish KeyPackages of a registered local client (UnknownClientError
 * otherwise). `lastResort` replaces the client's last-resort package of that
 * ciphersuite. A ref already stored fails the batch (DuplicateKeyPackageError),
 * and so does the ref of a package consumed before (ConsumedKeyPackageError, a
 * subclass). With `maxStored`, the batch fails with KeyPackageQuotaError when
 * the client would then hold more unexpired regular packages than that.
 */
export interface PublishKeyPackagesOp {
  readonly kind: "publishKeyPackages";
  readonly clientId: string;
  readonly keyPackages: readonly KeyPackageUpload[];
  readonly lastResort?: KeyPackageUpload;
  readonly maxStored?: number;
}

/**
 * How long the ref of a consumed KeyPackage without a shorter lifetime is
 * remembered (so that a re-upload of it is refused): one year.
 */
export const CONSUMED_KEY_PACKAGE_RETENTION_MS = 365 * 24 * 60 * 60 * 1000;

/**
 * Consume one KeyPackage of the client (oldest first, of `ciphersuite` if given):
 * a regular one is deleted, so it is never handed out twice, and its ref is
 * remembered until its expiresAt (at most CONSUMED_KEY_PACKAGE_RETENTION_MS)
 * so that it is never published again; when none is left, the last-resort one
 * is returned and kept. The result (or undefined) is in AppliedWrite.keyPackages,
 * in op order.
 */
export interface ConsumeKeyPackageOp {
  readonly kind: "consumeKeyPackage";
  readonly clientId: string;
  readonly ciphersuite?: number;
}

/** Delete KeyPackages of a client: the given refs, or all (last-resort included). */
export interface DeleteKeyPackagesOp {
  readonly kind: "deleteKeyPackages";
  readonly clientId: string;
  readonly refs?: readonly Uint8Array[];
}

/** Append to a queue; the assigned sequence is in AppliedWrite.appended, in op order. */
export interface AppendOp {
  readonly kind: "append";
  readonly queue: QueueId;
  readonly payload: Uint8Array;
  /** Group feeds only: members (client ids) that do not receive this entry (its sender). */
  readonly except?: readonly string[];
  /**
   * Not for group feeds: bytes the entry's payload starts with, shared by many entries and
   * stored once (the recipient section of a hub's DSFanoutRequests, the same for every message of
   * an epoch). Readers get `prefix.bytes || payload`. See EntryPrefix.
   */
  readonly prefix?: EntryPrefix;
}

/** An entry's payload length, without joining a prefixed entry's parts. */
export const payloadLength = (e: QueueEntry): number => (e.prefix !== undefined ? e.prefix.length + e.prefix.rest.length : e.payload.length);

/** QueueEntry.prefix: `payload` is `bytes || rest`, and `payload` is only joined when read. */
export interface EntryPrefixRead {
  /** Names the stored prefix: entries with the same id start with the same bytes. */
  readonly id: string;
  readonly length: number;
  readonly bytes: Uint8Array;
  /** The entry's own bytes after the prefix. */
  readonly rest: Uint8Array;
}

/**
 * A shared start of queue entries (hub side: the head of a DSFanoutRequest with the
 * recipients and their tokens, built once per group epoch). Stored once per
 * (groupId, ref) however many entries name it (`bytes` is ignored when stored
 * already); `ref` must identify the bytes (a digest). It is kept while the group
 * is at `epoch` or an entry names it; the group's next commit, its deletion or
 * purgeExpired drops it once neither holds.
 */
export interface EntryPrefix {
  readonly groupId: string;
  readonly epoch: bigint;
  readonly ref: string;
  readonly bytes: Uint8Array;
}

/**
 * A local client starts receiving the group's feed: every entry appended after
 * this op (in batch order), so a joiner does not get the commit that added it.
 * A client already receiving it is left as it is; a client that left but has
 * not pulled its last entries gets them into its queue first.
 */
export interface JoinFeedOp {
  readonly kind: "joinFeed";
  readonly groupId: string;
  readonly clientId: string;
}

/**
 * A local client stops receiving the group's feed after the entries appended
 * before this op (a removed member still gets the commit that removed it).
 * Without clientId: every member (the group is deleted).
 */
export interface LeaveFeedOp {
  readonly kind: "leaveFeed";
  readonly groupId: string;
  readonly clientId?: string;
}

/** What one pullFeeds op copies at most when it names no limit. */
export const DEFAULT_FEED_PULL_LIMIT = 1000;

/**
 * Copy up to `limit` (default DEFAULT_FEED_PULL_LIMIT) entries of the client's feeds that it has
 * not received into its queue (feed order per group, new queue sequences) and
 * move its cursors past them; feed entries every member has passed are
 * dropped. The number copied is in AppliedWrite.pulled.
 */
export interface PullFeedsOp {
  readonly kind: "pullFeeds";
  readonly clientId: string;
  readonly limit?: number;
}

/** A client's place in one group feed (reads). */
export interface FeedMembership {
  readonly groupId: string;
  /** The feed's last sequence; the client has pending entries when it is above `cursor` (and `until`, if set, is too). */
  readonly head: bigint;
  /** Last feed sequence the client has received (or skipped: before it joined, or not for it). */
  readonly cursor: bigint;
  /** Last feed sequence for the client once it left; undefined while it is a member. */
  readonly until?: bigint;
}

/**
 * Guest-side feeds (delivery by feed of a hub's DSFanoutRequests): the
 * recipient set a feed's membership follows, named by a caller-chosen id (a
 * digest of the set). Compare-and-set: the feed's current set id must be
 * `expected` (undefined: none recorded), else FeedSetConflictError with the
 * current one and nothing of the batch is applied; then it becomes `setId`
 * (the same id: a check only). The caller brings the membership to the new set
 * with leaveFeed / joinFeed ops in the same batch.
 */
export interface SetFeedSetOp {
  readonly kind: "setFeedSet";
  readonly groupId: string;
  readonly expected?: string;
  readonly setId: string;
}

/** Delete a queue's entries with seq <= uptoSeq (sequence numbering continues). */
export interface AckOp {
  readonly kind: "ack";
  readonly queue: QueueId;
  readonly uptoSeq: bigint;
}

/** Drop a queue with its entries and its counter. */
export interface DeleteQueueOp {
  readonly kind: "deleteQueue";
  readonly queue: QueueId;
}

/**
 * Guest-side at-most-once: record that message `sequence` from `source` (the
 * hub domain's stream) is processed. Sequences of one source are increasing
 * (the hub's outbox is ordered), so the store keeps a high-water mark. If
 * `sequence` is not above the mark, the message was already processed: the
 * WHOLE batch is skipped (nothing applied) and AppliedWrite.duplicate is true.
 */
export interface MarkProcessedOp {
  readonly kind: "markProcessed";
  readonly source: string;
  readonly sequence: bigint;
}

/**
 * Accept-once record of a request (replay protection, docs/security.md): when
 * an unexpired record of `key` exists, the WHOLE batch is skipped and
 * AppliedWrite.duplicate is true (as with markProcessed). Otherwise `key` is
 * recorded until `expiresAt`. With `groupId` the record belongs to the group
 * (deleted with it) at `epoch`, and the group's records of epochs below
 * `forgetBefore` are deleted (they can no longer be replayed: the DS refuses
 * their epoch). A key is recorded with one (groupId, epoch): the same key is
 * always given the same ones (a send_message key digests the message, which
 * names its group and epoch), and a store may find records by key alone or by
 * (groupId, epoch, key).
 */
export interface RecordRequestOp {
  readonly kind: "recordRequest";
  /** A digest of what must not be accepted twice (32 bytes). */
  readonly key: Uint8Array;
  readonly expiresAt: number;
  readonly groupId?: string;
  readonly epoch?: bigint;
  readonly forgetBefore?: bigint;
}

export type WriteOp =
  | CreateGroupOp
  | AdvanceGroupOp
  | SnapshotGroupOp
  | SetGroupMetadataOp
  | CheckEpochOp
  | DeleteGroupOp
  | AddProposalOp
  | RemoveProposalOp
  | AddHistoryOp
  | RemoveHistoryJoinerOp
  | SetFanoutTokenOp
  | RemoveFanoutTokenOp
  | PutClientOp
  | RemoveClientOp
  | PublishKeyPackagesOp
  | ConsumeKeyPackageOp
  | DeleteKeyPackagesOp
  | AppendOp
  | JoinFeedOp
  | LeaveFeedOp
  | PullFeedsOp
  | SetFeedSetOp
  | AckOp
  | DeleteQueueOp
  | MarkProcessedOp
  | RecordRequestOp;

/** One request's effects, applied in order, atomically. */
export interface StoreWrite {
  readonly ops: readonly WriteOp[];
}

export interface AppliedWrite {
  /** True when a markProcessed op found a duplicate: nothing was applied. */
  readonly duplicate: boolean;
  /** One per append op, in op order. */
  readonly appended: readonly { readonly queue: QueueId; readonly seq: bigint }[];
  /** One per consumeKeyPackage op, in op order (undefined: none available). */
  readonly keyPackages: readonly (StoredKeyPackage | undefined)[];
  /** The epoch each advanceGroup op produced, in op order. */
  readonly epochs: readonly { readonly groupId: string; readonly epoch: bigint }[];
  /** Feed entries copied into client queues by pullFeeds and joinFeed ops (absent: none). */
  readonly pulled?: number;
  /** Queue entries deleted by ack ops (absent: none). */
  readonly acked?: number;
}

export interface PurgeResult {
  readonly historyEntries: number;
  readonly keyPackages: number;
  readonly rateLimits: number;
  /** Tombstones of deleted groups whose time ran out. */
  readonly tombstones: number;
  /** Expired accept-once records (recordRequest). */
  readonly seenRequests: number;
  /** Remembered refs of consumed KeyPackages whose time is over. */
  readonly consumedKeyPackages?: number;
  /** Entry prefixes no entry names any more whose group moved past their epoch (or is gone). */
  readonly prefixes?: number;
}

/** What trimQueues drops from each queue it looks at. */
export interface QueueTrim {
  /** Entries enqueued before this time (ms). */
  readonly enqueuedBefore?: number;
  /** All but the newest `keepLast` entries. */
  readonly keepLast?: number;
}

// ---------------------------------------------------------------------------
// The port

export interface Store {
  /**
   * Apply one request's effects atomically: all ops or none. Throws
   * EpochConflictError, GroupExistsError, UnknownGroupError, UnknownClientError,
   * DuplicateKeyPackageError, StoreUnavailableError (nothing applied in each case),
   * or StoreOutcomeUnknownError (the commit was not confirmed: it may have been applied).
   * Resolves only once the write is durable.
   */
  apply(batch: StoreWrite): Promise<AppliedWrite>;
  /**
   * True when batches are applied in the order of the `apply` calls, even
   * while earlier ones are not yet durable (SQLite's group commit). The DS
   * then lets the next request of a group start before the previous one's
   * write is durable if that write does not change the group (send_message),
   * without changing the order of the writes.
   */
  readonly appliesInOrder?: boolean;

  // Groups
  loadGroup(groupId: string): Promise<LoadedGroup | undefined>;
  /**
   * What to replay to get the state at an earlier `epoch` (snapshot at or
   * before it, log up to it; `epoch` of the result is `epoch`). Kept for the
   * epochs of the group's history entries; undefined when the group is absent
   * or that epoch can no longer be rebuilt.
   */
  loadGroupAt(groupId: string, epoch: bigint): Promise<LoadedGroup | undefined>;
  /** Current epoch only (cheap; to validate a cached state), undefined if absent. */
  groupEpoch(groupId: string): Promise<bigint | undefined>;
  /**
   * Log entries with epoch > afterEpoch, to bring a cached state up to date.
   * Undefined if the group is absent or the log no longer reaches back to
   * afterEpoch + 1 (a newer snapshot replaced it): then use loadGroup.
   */
  readGroupLog(groupId: string, afterEpoch: bigint): Promise<readonly EpochLogEntry[] | undefined>;
  /** Group ids in ascending order, paged. */
  listGroups(opts?: { after?: string; limit?: number }): Promise<string[]>;
  /** Pending proposals of the group for `epoch`, in the order they were stored. */
  listProposals(groupId: string, epoch: bigint): Promise<StoredProposal[]>;
  /** Unexpired history entries of the group, ascending epoch. */
  listHistory(groupId: string, now?: number): Promise<HistoryEntry[]>;
  /** The newest unexpired history entry that lists this joiner. */
  historyForJoiner(groupId: string, keyPackageRef: Uint8Array, now?: number): Promise<HistoryEntry | undefined>;
  /** All FanoutAuthTokens of the group's members, by client id. */
  fanoutTokens(groupId: string): Promise<Map<string, Uint8Array>>;
  fanoutToken(groupId: string, clientId: string): Promise<Uint8Array | undefined>;

  // Local clients and KeyPackages
  getClient(clientId: string): Promise<ClientRecord | undefined>;
  /**
   * A counter that every putClient and removeClient increases (in its batch's
   * transaction): results derived from client records (verified
   * FanoutAuthTokens) stay valid while it does not change.
   */
  clientsVersion(): Promise<bigint>;
  /** Shortcut for apply({ops: [consumeKeyPackage]}). */
  consumeKeyPackage(clientId: string, ciphersuite?: number): Promise<StoredKeyPackage | undefined>;
  /** Unexpired regular (not last-resort) KeyPackages of the client. */
  countKeyPackages(clientId: string, ciphersuite?: number, now?: number): Promise<number>;

  // Queues
  /**
   * Up to `limit` entries with seq > afterSeq, ascending. With `maxBytes`,
   * the page also stops before the entry that would take its payloads' total
   * above maxBytes; the first entry is returned whatever its size.
   */
  read(queue: QueueId, afterSeq: bigint, limit: number, maxBytes?: number): Promise<QueueEntry[]>;
  /** Delete entries with seq <= uptoSeq; returns how many were deleted. */
  ack(queue: QueueId, uptoSeq: bigint): Promise<number>;
  queueInfo(queue: QueueId): Promise<QueueInfo>;
  /**
   * The group feeds the client receives, and those it left but has entries
   * pending from, in group id order.
   */
  feedMemberships(clientId: string): Promise<FeedMembership[]>;
  /** Client ids currently receiving the group's feed (members that have not left), ascending. */
  feedMembers(groupId: string): Promise<string[]>;
  /** The recipient set id a guest-side feed follows (setFeedSet), undefined if none. */
  feedSet(groupId: string): Promise<string | undefined>;
  /** Listen for committed appends to `queue` (also from other instances where the adapter can see them). */
  subscribe(queue: QueueId, listener: AppendListener): Unsubscribe;
  /**
   * Resolves with the queue's last sequence as soon as it is > afterSeq
   * (immediately if it already is). Rejects with the signal's reason on abort.
   */
  waitForAppend(queue: QueueId, afterSeq: bigint, signal?: AbortSignal): Promise<bigint>;

  // Guest-side at-most-once
  /** Whether `sequence` from `source` was already processed. */
  isProcessed(source: string, sequence: bigint): Promise<boolean>;

  // Rate limits (fixed window, shared by every instance using the store)
  rateLimit(key: string, rule: RateLimitRule, now?: number): Promise<RateLimitResult>;

  // Maintenance
  /** Delete expired history entries, expired KeyPackages (and remembered consumed refs), stale rate-limit windows, expired group tombstones and expired accept-once records. */
  purgeExpired(now?: number): Promise<PurgeResult>;
  /**
   * Drop entries of every queue whose name starts with `prefix` (e.g. the
   * outboxes, "outbox:") as `trim` says, as if acknowledged (sequence
   * numbering continues); returns how many were dropped.
   */
  trimQueues(prefix: string, trim: QueueTrim): Promise<number>;
  /** Cheap round trip for health checks; throws StoreUnavailableError. */
  ping(): Promise<void>;
  /** Release the database; pending waits reject with StoreClosedError. Idempotent. */
  close(): Promise<void>;
}
