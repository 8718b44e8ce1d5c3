// Versioned schema of the SQLite adapter. The schema version lives in
// PRAGMA user_version; MIGRATIONS[i] moves the schema from version i to i+1.
// Later changes APPEND a migration; never edit one that has shipped.

import type Database from "better-sqlite3";
import { StoreError } from "../errors.js";

export interface Migration {
  readonly name: string;
  readonly up: (db: Database.Database) => void;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    name: "initial schema",
    up: (db) => {
      db.exec(`
        -- Small, hot row per group: the CAS on epoch touches only this row.
        CREATE TABLE groups (
          group_id   TEXT PRIMARY KEY,
          epoch      INTEGER NOT NULL,
          metadata   BLOB,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        );
        -- Latest full state, kept apart so a commit does not rewrite it.
        CREATE TABLE group_snapshots (
          group_id TEXT PRIMARY KEY,
          epoch    INTEGER NOT NULL,
          state    BLOB NOT NULL
        );
        -- One entry per accepted commit after the snapshot.
        CREATE TABLE group_log (
          group_id   TEXT NOT NULL,
          epoch      INTEGER NOT NULL,
          entry      BLOB NOT NULL,
          created_at INTEGER NOT NULL,
          UNIQUE (group_id, epoch)
        );
        CREATE TABLE proposals (
          id        INTEGER PRIMARY KEY AUTOINCREMENT,
          group_id  TEXT NOT NULL,
          epoch     INTEGER NOT NULL,
          ref       BLOB NOT NULL,
          proposal  BLOB NOT NULL,
          UNIQUE (group_id, ref)
        );
        CREATE INDEX proposals_by_epoch ON proposals (group_id, epoch, id);
        CREATE TABLE history_epochs (
          group_id     TEXT NOT NULL,
          epoch        INTEGER NOT NULL,
          ratchet_tree BLOB NOT NULL,
          group_info   BLOB,
          expires_at   INTEGER NOT NULL,
          PRIMARY KEY (group_id, epoch)
        );
        CREATE INDEX history_by_expiry ON history_epochs (expires_at);
        CREATE TABLE history_joiners (
          group_id TEXT NOT NULL,
          epoch    INTEGER NOT NULL,
          kp_ref   BLOB NOT NULL,
          PRIMARY KEY (group_id, kp_ref, epoch)
        ) WITHOUT ROWID;
        CREATE INDEX history_joiners_by_epoch ON history_joiners (group_id, epoch);
        CREATE TABLE fanout_tokens (
          group_id  TEXT NOT NULL,
          client_id TEXT NOT NULL,
          token     BLOB NOT NULL,
          PRIMARY KEY (group_id, client_id)
        );
        CREATE TABLE clients (
          client_id  TEXT PRIMARY KEY,
          sig_key    BLOB NOT NULL,
          auth_data  BLOB,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL
        );
        CREATE TABLE key_packages (
          id          INTEGER PRIMARY KEY AUTOINCREMENT,
          client_id   TEXT NOT NULL,
          ciphersuite INTEGER NOT NULL,
          ref         BLOB NOT NULL UNIQUE,
          key_package BLOB NOT NULL,
          last_resort INTEGER NOT NULL,
          expires_at  INTEGER,
          created_at  INTEGER NOT NULL
        );
        CREATE INDEX key_packages_by_client ON key_packages (client_id, last_resort, ciphersuite, id);
        CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (client_id, ciphersuite) WHERE last_resort = 1;
        -- Per-queue counter: sequences stay gap-free and never reused even after acks empty the queue.
        CREATE TABLE queues (
          queue    TEXT PRIMARY KEY,
          last_seq INTEGER NOT NULL
        );
        CREATE TABLE queue_entries (
          queue       TEXT NOT NULL,
          seq         INTEGER NOT NULL,
          payload     BLOB NOT NULL,
          enqueued_at INTEGER NOT NULL,
          UNIQUE (queue, seq)
        );
        -- Guest-side at-most-once: high-water mark per source stream.
        CREATE TABLE processed (
          source   TEXT PRIMARY KEY,
          last_seq INTEGER NOT NULL
        );
        CREATE TABLE rate_limits (
          key          TEXT PRIMARY KEY,
          window_start INTEGER NOT NULL,
          window_end   INTEGER NOT NULL,
          count        INTEGER NOT NULL
        );
        CREATE INDEX rate_limits_by_end ON rate_limits (window_end);
      `);
    },
  },
  {
    // A commit to a big group enqueues the same bytes for every local member:
    // store them once per batch and let the entries point at them (an entry
    // with payload_id keeps an empty inline payload). The trigger drops a
    // shared payload with its last entry (ack, deleteQueue).
    name: "shared queue payloads",
    up(db) {
      db.exec(`
        CREATE TABLE queue_payloads (
          id   INTEGER PRIMARY KEY,
          data BLOB NOT NULL,
          refs INTEGER NOT NULL
        );
        ALTER TABLE queue_entries ADD COLUMN payload_id INTEGER;
        CREATE TRIGGER queue_entries_release_payload AFTER DELETE ON queue_entries
        WHEN old.payload_id IS NOT NULL
        BEGIN
          UPDATE queue_payloads SET refs = refs - 1 WHERE id = old.payload_id;
          DELETE FROM queue_payloads WHERE id = old.payload_id AND refs <= 0;
        END;
      `);
    },
  },
  {
    // Group feeds (port.ts groupFeed): a message to a group's local members is
    // one feed entry (its payload in queue_payloads, the excluded sender in
    // except_ids); each member's cursor says what it has pulled into its queue.
    name: "group feeds",
    up(db) {
      db.exec(`
        ALTER TABLE queue_entries ADD COLUMN except_ids TEXT;
        CREATE TABLE feed_members (
          client_id TEXT NOT NULL,
          group_id  TEXT NOT NULL,
          cursor    INTEGER NOT NULL,
          until     INTEGER,
          PRIMARY KEY (client_id, group_id)
        ) WITHOUT ROWID;
        CREATE INDEX feed_members_by_group ON feed_members (group_id, cursor);
      `);
    },
  },
  {
    // Epoch history by reference: a history entry without its tree is rebuilt
    // from an older snapshot and the log, which the store then keeps.
    name: "retained snapshots",
    up(db) {
      db.exec(`
        CREATE TABLE retained_snapshots (
          group_id TEXT NOT NULL,
          epoch    INTEGER NOT NULL,
          state    BLOB NOT NULL,
          PRIMARY KEY (group_id, epoch)
        ) WITHOUT ROWID;
      `);
    },
  },
  {
    // Deleted groups stay deleted (a replayed create_group is refused until
    // the tombstone expires), and pending proposals know their age (a
    // proposal no commit took in time stops being required).
    name: "group tombstones, proposal times",
    up(db) {
      db.exec(`
        CREATE TABLE group_tombstones (
          group_id   TEXT PRIMARY KEY,
          deleted_at INTEGER NOT NULL,
          expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX group_tombstones_by_expiry ON group_tombstones (expires_at);
        ALTER TABLE proposals ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
      `);
    },
  },
  {
    // docs/security.md (issue 13): accept-once records of requests (a
    // send_message replay is not fanned out twice), each group's owner for the
    // groups-per-creator quota, and an index to find old outbox entries.
    name: "replay records, group owners",
    up(db) {
      db.exec(`
        CREATE TABLE seen_requests (
          key        BLOB PRIMARY KEY,
          group_id   TEXT,
          epoch      INTEGER,
          expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX seen_requests_by_group ON seen_requests (group_id, epoch) WHERE group_id IS NOT NULL;
        CREATE INDEX seen_requests_by_expiry ON seen_requests (expires_at);
        ALTER TABLE groups ADD COLUMN owner TEXT;
        CREATE INDEX groups_by_owner ON groups (owner) WHERE owner IS NOT NULL;
      `);
    },
  },
  {
    // Refs of consumed KeyPackages, so that a consumed package is never
    // published (and handed out) again while it could still be used.
    name: "consumed key packages",
    up(db) {
      db.exec(`
        CREATE TABLE consumed_key_packages (
          ref        BLOB PRIMARY KEY,
          client_id  TEXT NOT NULL,
          expires_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX consumed_key_packages_by_expiry ON consumed_key_packages (expires_at);
      `);
    },
  },
  {
    // Issue 16 (federation at scale). Guest-side delivery by feed: the
    // recipient set a guest feed follows (setFeedSet). Hub side: the
    // recipient section of an epoch's DSFanoutRequests stored once, outbox
    // entries pointing at it (AUTOINCREMENT: ids are never reused, so readers
    // may cache a prefix by id). A counter of client record changes, so a
    // guest can keep verified tokens until a record changes.
    name: "guest feed sets, shared entry prefixes, clients version",
    up(db) {
      db.exec(`
        CREATE TABLE feed_sets (
          group_id TEXT PRIMARY KEY,
          set_id   TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE entry_prefixes (
          id       INTEGER PRIMARY KEY AUTOINCREMENT,
          group_id TEXT NOT NULL,
          ref      TEXT NOT NULL,
          epoch    INTEGER NOT NULL,
          data     BLOB NOT NULL,
          UNIQUE (group_id, ref)
        );
        ALTER TABLE queue_entries ADD COLUMN prefix_id INTEGER;
        CREATE INDEX queue_entries_by_prefix ON queue_entries (prefix_id) WHERE prefix_id IS NOT NULL;
        CREATE TABLE counters (
          name  TEXT PRIMARY KEY,
          value INTEGER NOT NULL
        ) WITHOUT ROWID;
      `);
    },
  },
  {
    // Issue 16, KB written per message (docs/performance.md "Fewer B-trees
    // per message"). A WAL commit writes every page it touched, so each
    // B-tree a message lands in costs a page per commit:
    // - queue entries are clustered by (queue, seq): one B-tree instead of a
    //   rowid table and its (queue, seq) index;
    // - accept-once records are keyed by (scope, epoch, key): forgetting a
    //   group's old epochs is a range of the key, so the (group, epoch) index
    //   goes. scope is the group ('' for none); epoch -1 is "no epoch" of a
    //   group record, -2 a record of no group.
    // - a shared payload's reference count lives in its own small table, so
    //   that acknowledging or pulling an entry dirties a page of counts, not
    //   the page holding the message again (no count row: one user, so the row goes when one is left);
    // - the guest's at-most-once marks move into the queue counters, as
    //   queue 'processed:<source>': one page of counters per commit, not two.
    // Prefixed outbox entries now share the batch's stored payload; before,
    // a payload shared by a feed entry and prefixed entries was counted for
    // all of them but named by the feed entry only, so it was never freed:
    // the reference counts are recomputed here.
    name: "clustered queue entries, accept-once by group epoch",
    up(db) {
      db.exec(`
        CREATE TABLE queue_entries_clustered (
          queue       TEXT NOT NULL,
          seq         INTEGER NOT NULL,
          payload     BLOB NOT NULL,
          enqueued_at INTEGER NOT NULL,
          payload_id  INTEGER,
          except_ids  TEXT,
          prefix_id   INTEGER,
          PRIMARY KEY (queue, seq)
        ) WITHOUT ROWID;
        INSERT INTO queue_entries_clustered (queue, seq, payload, enqueued_at, payload_id, except_ids, prefix_id)
          SELECT queue, seq, payload, enqueued_at, payload_id, except_ids, prefix_id FROM queue_entries;
        DROP TABLE queue_entries;
        ALTER TABLE queue_entries_clustered RENAME TO queue_entries;
        CREATE INDEX queue_entries_by_prefix ON queue_entries (prefix_id) WHERE prefix_id IS NOT NULL;

        CREATE TEMP TABLE payload_users (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
        INSERT INTO payload_users (id, n) SELECT payload_id, count(*) FROM queue_entries WHERE payload_id IS NOT NULL GROUP BY payload_id;
        DELETE FROM queue_payloads WHERE id NOT IN (SELECT id FROM payload_users);
        CREATE TABLE queue_payload_refs (
          id   INTEGER PRIMARY KEY,
          refs INTEGER NOT NULL
        );
        INSERT INTO queue_payload_refs (id, refs) SELECT u.id, u.n FROM payload_users u JOIN queue_payloads p ON p.id = u.id WHERE u.n > 1;
        DROP TABLE payload_users;
        ALTER TABLE queue_payloads DROP COLUMN refs;
        CREATE TRIGGER queue_entries_release_payload AFTER DELETE ON queue_entries
        WHEN old.payload_id IS NOT NULL
        BEGIN
          DELETE FROM queue_payloads WHERE id = old.payload_id AND NOT EXISTS (SELECT 1 FROM queue_payload_refs WHERE id = old.payload_id);
          UPDATE queue_payload_refs SET refs = refs - 1 WHERE id = old.payload_id;
          DELETE FROM queue_payload_refs WHERE id = old.payload_id AND refs <= 1;
        END;

        INSERT INTO queues (queue, last_seq) SELECT 'processed:' || source, last_seq FROM processed;
        DROP TABLE processed;

        CREATE TABLE seen_requests_by_epoch (
          scope      TEXT NOT NULL,
          epoch      INTEGER NOT NULL,
          key        BLOB NOT NULL,
          expires_at INTEGER NOT NULL,
          PRIMARY KEY (scope, epoch, key)
        ) WITHOUT ROWID;
        INSERT INTO seen_requests_by_epoch (scope, epoch, key, expires_at)
          SELECT coalesce(group_id, ''), CASE WHEN group_id IS NULL THEN -2 ELSE coalesce(epoch, -1) END, key, expires_at FROM seen_requests;
        DROP TABLE seen_requests;
        ALTER TABLE seen_requests_by_epoch RENAME TO seen_requests;
        CREATE INDEX seen_requests_by_expiry ON seen_requests (expires_at);
      `);
    },
  },
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** The database was written by a newer build; refusing to run protects its data. */
export class SchemaTooNewError extends StoreError {
  constructor(readonly found: number, readonly supported: number) {
    super(`database schema version ${found} is newer than this build supports (${supported})`);
  }
}

/** Bring the schema to SCHEMA_VERSION; each step and its version bump commit together. */
export function migrate(db: Database.Database, migrations: readonly Migration[] = MIGRATIONS): number {
  const current = Number(db.pragma("user_version", { simple: true }));
  if (current > migrations.length) throw new SchemaTooNewError(current, migrations.length);
  for (let v = current; v < migrations.length; v++) {
    const m = migrations[v]!;
    db.transaction(() => {
      m.up(db);
      // PRAGMA takes no bound parameters; v is a number we control.
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
  return migrations.length;
}
