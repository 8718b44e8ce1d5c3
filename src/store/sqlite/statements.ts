// The SQLite connection both sides use (the reading one of SqliteStore and
// the writing one of SqliteWriter): how it is opened, every prepared
// statement, and the row helpers.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { plainBytes } from "../common.js";
import { StoreClosedError, StoreError, StoreUnavailableError } from "../errors.js";
import type { EpochLogEntry, StoredKeyPackage } from "../port.js";
import { prepareHardening } from "./harden-ds.js";

export interface ConnectionOptions {
  readonly path: string;
  readonly synchronous?: "FULL" | "NORMAL";
  readonly busyTimeoutMs?: number;
}

export type Row = Record<string, unknown>;
/** A prepared statement (named, so that the statement table's type can be written out). */
export interface Stmt {
  run(...params: unknown[]): Database.RunResult;
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  iterate(...params: unknown[]): IterableIterator<unknown>;
  pluck(toggle?: boolean): Stmt;
}
export const num = (v: unknown): number => Number(v as bigint);
export const big = (v: unknown): bigint => v as bigint;
export const bytes = (v: unknown): Uint8Array => plainBytes(v as Buffer | null);

// SQLite result codes that mean "the database cannot serve now", not "your request is wrong".
const UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|READONLY|CORRUPT|NOTADB|PROTOCOL|NOMEM)/;

export function translate(err: unknown): unknown {
  if (err instanceof StoreError) return err;
  if (err instanceof Database.SqliteError && UNAVAILABLE.test(err.code)) {
    return new StoreUnavailableError(`sqlite: ${err.message}`, { cause: err });
  }
  if (err instanceof TypeError && /database connection is not open/.test(err.message)) return new StoreClosedError();
  return err;
}

/** A connection with the adapter's settings (the schema is the caller's business). */
export function openConnection(options: ConnectionOptions): Database.Database {
  const memory = options.path === ":memory:";
  if (!memory) mkdirSync(dirname(options.path), { recursive: true });
  let db: Database.Database | undefined;
  try {
    db = new Database(options.path);
    db.defaultSafeIntegers(true);
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 5000))}`);
    if (!memory) {
      const mode = String(db.pragma("journal_mode = WAL", { simple: true }));
      if (mode.toLowerCase() !== "wal") throw new StoreUnavailableError(`sqlite: cannot enable WAL (journal_mode=${mode})`);
    }
    db.pragma(`synchronous = ${options.synchronous === "NORMAL" ? "NORMAL" : "FULL"}`);
    // 64 MiB page cache (default 2 MiB): queue and group indexes stay in memory instead of
    // being re-read through the OS on every insert.
    db.pragma("cache_size = -65536");
    // Group commit runs each apply in a SAVEPOINT: its sub-journal (copies of pages the
    // group already changed) stays in memory instead of a temp file.
    db.pragma("temp_store = MEMORY");
    return db;
  } catch (err) {
    db?.close();
    throw translate(err);
  }
}

export function logEntryOf(r: Row): EpochLogEntry {
  return { epoch: big(r.epoch), entry: bytes(r.entry), createdAt: num(r.created_at) };
}

export function keyPackageOf(r: Row): StoredKeyPackage {
  const base = {
    clientId: String(r.client_id),
    ref: bytes(r.ref),
    ciphersuite: num(r.ciphersuite),
    keyPackage: bytes(r.key_package),
    lastResort: num(r.last_resort) === 1,
  };
  return r.expires_at == null ? base : { ...base, expiresAt: num(r.expires_at) };
}

// Every statement is prepared once per connection.
export function prepare(db: Database.Database) {
  const p = (sql: string): Stmt => db.prepare(sql);
  return {
    ping: p("SELECT 1"),
    groupEpoch: p("SELECT epoch FROM groups WHERE group_id = ?"),
    getGroup: p("SELECT epoch, metadata, created_at, updated_at FROM groups WHERE group_id = ?"),
    insertGroup: p("INSERT INTO groups (group_id, epoch, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"),
    setEpoch: p("UPDATE groups SET epoch = ?, metadata = coalesce(?, metadata), updated_at = ? WHERE group_id = ?"),
    setMetadata: p("UPDATE groups SET metadata = ?, updated_at = ? WHERE group_id = ?"),
    upsertSnapshot: p(
      "INSERT INTO group_snapshots (group_id, epoch, state) VALUES (?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch, state = excluded.state",
    ),
    getSnapshot: p("SELECT epoch, state FROM group_snapshots WHERE group_id = ?"),
    getSnapshotEpoch: p("SELECT epoch FROM group_snapshots WHERE group_id = ?"),
    insertLog: p("INSERT INTO group_log (group_id, epoch, entry, created_at) VALUES (?, ?, ?, ?)"),
    pruneLog: p("DELETE FROM group_log WHERE group_id = ? AND epoch <= ?"),
    readLogRange: p("SELECT epoch, entry, created_at FROM group_log WHERE group_id = ? AND epoch > ? AND epoch <= ? ORDER BY epoch"),
    oldestTreelessHistory: p("SELECT min(epoch) AS epoch FROM history_epochs WHERE group_id = ? AND length(ratchet_tree) = 0"),
    retainSnapshot: p("INSERT OR IGNORE INTO retained_snapshots (group_id, epoch, state) VALUES (?, ?, ?)"),
    retainedAtOrBefore: p("SELECT epoch, state FROM retained_snapshots WHERE group_id = ? AND epoch <= ? ORDER BY epoch DESC LIMIT 1"),
    pruneRetained: p("DELETE FROM retained_snapshots WHERE group_id = ? AND epoch < ?"),
    readLog: p("SELECT epoch, entry, created_at FROM group_log WHERE group_id = ? AND epoch > ? ORDER BY epoch"),
    listGroups: p("SELECT group_id FROM groups WHERE (? IS NULL OR group_id > ?) ORDER BY group_id LIMIT ?"),
    deleteGroupAll: [
      p("DELETE FROM groups WHERE group_id = ?"),
      p("DELETE FROM group_snapshots WHERE group_id = ?"),
      p("DELETE FROM retained_snapshots WHERE group_id = ?"),
      p("DELETE FROM group_log WHERE group_id = ?"),
      p("DELETE FROM proposals WHERE group_id = ?"),
      p("DELETE FROM history_joiners WHERE group_id = ?"),
      p("DELETE FROM history_epochs WHERE group_id = ?"),
      p("DELETE FROM fanout_tokens WHERE group_id = ?"),
    ],
    insertProposal: p("INSERT OR IGNORE INTO proposals (group_id, epoch, ref, proposal, created_at) VALUES (?, ?, ?, ?, ?)"),
    deleteProposal: p("DELETE FROM proposals WHERE group_id = ? AND ref = ?"),
    clearOldProposals: p("DELETE FROM proposals WHERE group_id = ? AND epoch < ?"),
    listProposals: p("SELECT epoch, ref, proposal, created_at FROM proposals WHERE group_id = ? AND epoch = ? ORDER BY id"),
    getTombstone: p("SELECT expires_at FROM group_tombstones WHERE group_id = ?"),
    upsertTombstone: p("INSERT INTO group_tombstones (group_id, deleted_at, expires_at) VALUES (?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET deleted_at = excluded.deleted_at, expires_at = excluded.expires_at"),
    purgeTombstones: p("DELETE FROM group_tombstones WHERE expires_at <= ?"),
    upsertHistory: p(
      "INSERT INTO history_epochs (group_id, epoch, ratchet_tree, group_info, expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id, epoch) DO UPDATE SET ratchet_tree = excluded.ratchet_tree, group_info = excluded.group_info, expires_at = excluded.expires_at",
    ),
    deleteHistoryJoinersOfEpoch: p("DELETE FROM history_joiners WHERE group_id = ? AND epoch = ?"),
    insertHistoryJoiner: p("INSERT OR IGNORE INTO history_joiners (group_id, epoch, kp_ref) VALUES (?, ?, ?)"),
    deleteHistoryJoiner: p("DELETE FROM history_joiners WHERE group_id = ? AND kp_ref = ?"),
    deleteHistoryJoinerAt: p("DELETE FROM history_joiners WHERE group_id = ? AND kp_ref = ? AND epoch = ?"),
    deleteEmptyHistory: p(
      "DELETE FROM history_epochs WHERE group_id = ? AND NOT EXISTS (SELECT 1 FROM history_joiners j WHERE j.group_id = history_epochs.group_id AND j.epoch = history_epochs.epoch)",
    ),
    listHistory: p("SELECT * FROM history_epochs WHERE group_id = ? AND expires_at > ? ORDER BY epoch"),
    historyForJoiner: p(
      "SELECT h.* FROM history_joiners j JOIN history_epochs h ON h.group_id = j.group_id AND h.epoch = j.epoch WHERE j.group_id = ? AND j.kp_ref = ? AND h.expires_at > ? ORDER BY h.epoch DESC LIMIT 1",
    ),
    historyJoiners: p("SELECT kp_ref FROM history_joiners WHERE group_id = ? AND epoch = ? ORDER BY kp_ref"),
    purgeHistoryJoiners: p(
      "DELETE FROM history_joiners WHERE (group_id, epoch) IN (SELECT group_id, epoch FROM history_epochs WHERE expires_at <= ?)",
    ),
    purgeHistory: p("DELETE FROM history_epochs WHERE expires_at <= ?"),
    upsertToken: p(
      "INSERT INTO fanout_tokens (group_id, client_id, token) VALUES (?, ?, ?) ON CONFLICT (group_id, client_id) DO UPDATE SET token = excluded.token",
    ),
    deleteToken: p("DELETE FROM fanout_tokens WHERE group_id = ? AND client_id = ?"),
    listTokens: p("SELECT client_id, token FROM fanout_tokens WHERE group_id = ? ORDER BY client_id"),
    getToken: p("SELECT token FROM fanout_tokens WHERE group_id = ? AND client_id = ?"),
    upsertClient: p(
      "INSERT INTO clients (client_id, sig_key, auth_data, created_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET sig_key = excluded.sig_key, auth_data = excluded.auth_data, updated_at = excluded.updated_at",
    ),
    getClient: p("SELECT sig_key, auth_data, created_at, updated_at FROM clients WHERE client_id = ?"),
    deleteClient: p("DELETE FROM clients WHERE client_id = ?"),
    keyPackageByRef: p("SELECT id FROM key_packages WHERE ref = ?"),
    insertKeyPackage: p(
      "INSERT INTO key_packages (client_id, ciphersuite, ref, key_package, last_resort, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ),
    deleteLastResort: p("DELETE FROM key_packages WHERE client_id = ? AND ciphersuite = ? AND last_resort = 1"),
    pickKeyPackage: p(
      "SELECT * FROM key_packages WHERE client_id = ? AND last_resort = ? AND (? IS NULL OR ciphersuite = ?) AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1",
    ),
    deleteKeyPackageId: p("DELETE FROM key_packages WHERE id = ?"),
    deleteKeyPackageRef: p("DELETE FROM key_packages WHERE client_id = ? AND ref = ?"),
    deleteKeyPackagesOfClient: p("DELETE FROM key_packages WHERE client_id = ?"),
    countKeyPackages: p(
      "SELECT count(*) AS n FROM key_packages WHERE client_id = ? AND last_resort = 0 AND (? IS NULL OR ciphersuite = ?) AND (expires_at IS NULL OR expires_at > ?)",
    ),
    purgeKeyPackages: p("DELETE FROM key_packages WHERE expires_at IS NOT NULL AND expires_at <= ?"),
    consumedByRef: p("SELECT 1 AS x FROM consumed_key_packages WHERE ref = ? AND expires_at > ?"),
    insertConsumed: p("INSERT OR REPLACE INTO consumed_key_packages (ref, client_id, expires_at) VALUES (?, ?, ?)"),
    purgeConsumed: p("DELETE FROM consumed_key_packages WHERE expires_at <= ?"),
    bumpQueue: p(
      "INSERT INTO queues (queue, last_seq) VALUES (?, 1) ON CONFLICT (queue) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
    ),
    // prefix_id: the entry's stored prefix (entry_prefixes), or null.
    insertEntry: p("INSERT INTO queue_entries (queue, seq, payload, enqueued_at, prefix_id) VALUES (?, ?, ?, ?, ?)"),
    insertPayload: p("INSERT INTO queue_payloads (data) VALUES (?) RETURNING id"),
    insertPayloadRefs: p("INSERT INTO queue_payload_refs (id, refs) VALUES (?, ?)"),
    // No count row means one user (the entry that stored it).
    insertFeedEntry: p("INSERT INTO queue_entries (queue, seq, payload, payload_id, enqueued_at, except_ids) VALUES (?, ?, x'', ?, ?, ?)"),
    addPayloadRef: p("INSERT INTO queue_payload_refs (id, refs) VALUES (?, 2) ON CONFLICT (id) DO UPDATE SET refs = refs + 1"),
    feedEntries: p("SELECT seq, payload_id, except_ids FROM queue_entries WHERE queue = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"),
    getFeedMember: p("SELECT group_id, cursor, until FROM feed_members WHERE client_id = ? AND group_id = ?"),
    upsertFeedMember: p(
      "INSERT INTO feed_members (client_id, group_id, cursor, until) VALUES (?, ?, ?, NULL) ON CONFLICT (client_id, group_id) DO UPDATE SET cursor = excluded.cursor, until = NULL",
    ),
    leaveFeed: p("UPDATE feed_members SET until = ? WHERE client_id = ? AND group_id = ? AND until IS NULL"),
    leaveFeedAll: p("UPDATE feed_members SET until = ? WHERE group_id = ? AND until IS NULL"),
    dropFinishedFeedMembers: p("DELETE FROM feed_members WHERE group_id = ? AND until IS NOT NULL AND cursor >= until"),
    deleteFeedMember: p("DELETE FROM feed_members WHERE client_id = ? AND group_id = ?"),
    setFeedCursor: p("UPDATE feed_members SET cursor = ? WHERE client_id = ? AND group_id = ?"),
    feedMembersOfClient: p("SELECT group_id, cursor, until FROM feed_members WHERE client_id = ? ORDER BY group_id"),
    feedMembershipsOfClient: p(
      "SELECT m.group_id, m.cursor, m.until, coalesce(q.last_seq, 0) AS head FROM feed_members m LEFT JOIN queues q ON q.queue = 'feed:' || m.group_id WHERE m.client_id = ? ORDER BY m.group_id",
    ),
    feedMembersOfGroup: p("SELECT client_id FROM feed_members WHERE group_id = ? AND until IS NULL ORDER BY client_id"),
    lowestFeedCursor: p("SELECT min(cursor) AS low FROM feed_members WHERE group_id = ?"),
    insertSharedEntry: p("INSERT INTO queue_entries (queue, seq, payload, payload_id, enqueued_at, prefix_id) VALUES (?, ?, x'', ?, ?, ?)"),
    readQueue: p(
      "SELECT e.seq, coalesce(p.data, e.payload) AS payload, e.enqueued_at, e.prefix_id FROM queue_entries e LEFT JOIN queue_payloads p ON p.id = e.payload_id WHERE e.queue = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
    ),
    // Issue 16: guest feed sets, shared entry prefixes, the clients version.
    getFeedSet: p("SELECT set_id FROM feed_sets WHERE group_id = ?"),
    upsertFeedSet: p("INSERT INTO feed_sets (group_id, set_id) VALUES (?, ?) ON CONFLICT (group_id) DO UPDATE SET set_id = excluded.set_id"),
    prefixId: p("SELECT id FROM entry_prefixes WHERE group_id = ? AND ref = ?"),
    insertPrefix: p("INSERT INTO entry_prefixes (group_id, ref, epoch, data) VALUES (?, ?, ?, ?) RETURNING id"),
    prefixData: p("SELECT data FROM entry_prefixes WHERE id = ?"),
    sweepPrefixesBefore: p(
      "DELETE FROM entry_prefixes WHERE group_id = ? AND epoch < ? AND NOT EXISTS (SELECT 1 FROM queue_entries e WHERE e.prefix_id = entry_prefixes.id)",
    ),
    sweepPrefixesOfGroup: p(
      "DELETE FROM entry_prefixes WHERE group_id = ? AND NOT EXISTS (SELECT 1 FROM queue_entries e WHERE e.prefix_id = entry_prefixes.id)",
    ),
    purgePrefixes: p(
      "DELETE FROM entry_prefixes WHERE NOT EXISTS (SELECT 1 FROM queue_entries e WHERE e.prefix_id = entry_prefixes.id) AND coalesce(epoch < (SELECT g.epoch FROM groups g WHERE g.group_id = entry_prefixes.group_id), 1)",
    ),
    bumpClientsVersion: p("INSERT INTO counters (name, value) VALUES ('clients', 1) ON CONFLICT (name) DO UPDATE SET value = value + 1"),
    clientsVersion: p("SELECT value FROM counters WHERE name = 'clients'"),
    ackQueue: p("DELETE FROM queue_entries WHERE queue = ? AND seq <= ?"),
    queueHead: p("SELECT last_seq FROM queues WHERE queue = ?"),
    queueStats: p("SELECT min(seq) AS first, count(*) AS n FROM queue_entries WHERE queue = ?"),
    deleteQueueEntries: p("DELETE FROM queue_entries WHERE queue = ?"),
    deleteQueue: p("DELETE FROM queues WHERE queue = ?"),
    // At-most-once marks live beside the queue counters (migration "clustered queue entries, ..."):
    // a guest's commit then touches one page of counters, not two.
    getProcessed: p("SELECT last_seq FROM queues WHERE queue = 'processed:' || ?"),
    upsertProcessed: p(
      "INSERT INTO queues (queue, last_seq) VALUES ('processed:' || ?, ?) ON CONFLICT (queue) DO UPDATE SET last_seq = excluded.last_seq",
    ),
    getRate: p("SELECT window_start, count FROM rate_limits WHERE key = ?"),
    upsertRate: p(
      "INSERT INTO rate_limits (key, window_start, window_end, count) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, window_end = excluded.window_end, count = excluded.count",
    ),
    purgeRates: p("DELETE FROM rate_limits WHERE window_end <= ?"),
    ...prepareHardening(db),
  };
}

export type Statements = ReturnType<typeof prepare>;
