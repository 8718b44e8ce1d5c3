// Statements of the accept-once records, the group-owner quota and queue
// trimming (docs/security.md; the "replay records, group owners" migration).
// Kept apart from statements.ts so the additions stay in one place.
import type Database from "better-sqlite3";
import type { Stmt } from "./statements.js";

export function prepareHardening(db: Database.Database) {
  const p = (sql: string): Stmt => db.prepare(sql) as unknown as Stmt;
  return {
    // Keyed by (scope, epoch, key) (migration "clustered queue entries, accept-once by
    // group epoch"): scope is the group or '', epoch -1 a group record without one, -2 no group.
    getSeenRequest: p("SELECT expires_at FROM seen_requests WHERE scope = ? AND epoch = ? AND key = ?"),
    upsertSeenRequest: p(
      "INSERT INTO seen_requests (scope, epoch, key, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (scope, epoch, key) DO UPDATE SET expires_at = excluded.expires_at",
    ),
    forgetSeenRequestsBefore: p("DELETE FROM seen_requests WHERE scope = ? AND epoch >= 0 AND epoch < ?"),
    deleteSeenRequestsOfGroup: p("DELETE FROM seen_requests WHERE scope = ? AND epoch >= -1"),
    purgeSeenRequests: p("DELETE FROM seen_requests WHERE expires_at <= ?"),
    /** Each new record takes a few expired ones with it, so the table stays bounded without a scheduled purge. */
    purgeSomeSeenRequests: p(
      "DELETE FROM seen_requests WHERE (scope, epoch, key) IN (SELECT scope, epoch, key FROM seen_requests WHERE expires_at <= ? LIMIT 8)",
    ),
    countOwnedGroups: p("SELECT count(*) AS n FROM groups WHERE owner = ?"),
    setGroupOwner: p("UPDATE groups SET owner = ? WHERE group_id = ?"),
    /** Queues named prefix..prefix+U+FFFF (the name range of the prefix). */
    queuesWithPrefix: p("SELECT queue, last_seq FROM queues WHERE queue >= ? AND queue < ? ORDER BY queue"),
    lastEntryBefore: p("SELECT max(seq) AS seq FROM queue_entries WHERE queue = ? AND enqueued_at < ?"),
  };
}
