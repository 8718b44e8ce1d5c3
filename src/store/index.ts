// Entry point of the storage layer: pick the adapter from a URI.
//
//   /var/lib/mimi            existing directory (or ending in "/"): <dir>/mimi-ds.sqlite
//   ./data/ds.sqlite         a file path
//   sqlite:/abs/file.sqlite  sqlite:relative/file  sqlite:///abs/file  sqlite::memory:
//   mongodb://...  mongodb+srv://...   MongoDB (a replica set: transactions, change streams)

import { statSync } from "node:fs";
import { join } from "node:path";
import { StoreError } from "./errors.js";
import type { Store } from "./port.js";
import { openSqliteStore, type SqliteStoreOptions } from "./sqlite/store.js";

export * from "./errors.js";
export * from "./port.js";
export { SqliteStore, openSqliteStore, type SqliteStoreOptions } from "./sqlite/store.js";
export { MIGRATIONS, SCHEMA_VERSION, migrate, SchemaTooNewError } from "./sqlite/migrations.js";

/** File name used when the SQLite URI names a data directory. */
export const SQLITE_FILE_NAME = "mimi-ds.sqlite";

export interface OpenStoreOptions {
  /** SQLite only: synchronous mode (default FULL). */
  readonly synchronous?: SqliteStoreOptions["synchronous"];
  /** SQLite only: where writes run (default: a worker thread). */
  readonly writer?: SqliteStoreOptions["writer"];
  /** Clock, for tests. */
  readonly now?: () => number;
  /** MongoDB only: database name (default: the URI's path, else "mimi_ds"). */
  readonly mongoDatabase?: string;
}

export async function openStore(uri: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (/^mongodb(\+srv)?:\/\//i.test(uri)) {
    // Loaded lazily: an embedded deployment never touches the driver.
    const { openMongoStore } = await import("./mongo/store.js");
    return openMongoStore({
      uri,
      ...(options.mongoDatabase !== undefined ? { database: options.mongoDatabase } : {}),
      ...(options.now !== undefined ? { now: options.now } : {}),
    });
  }
  return openSqliteStore({
    path: sqlitePathOf(uri),
    ...(options.synchronous !== undefined ? { synchronous: options.synchronous } : {}),
    ...(options.writer !== undefined ? { writer: options.writer } : {}),
    ...(options.now !== undefined ? { now: options.now } : {}),
  });
}

/** The SQLite file a store URI designates. */
export function sqlitePathOf(uri: string): string {
  let path = uri;
  if (/^sqlite:/i.test(path)) {
    path = path.slice("sqlite:".length);
    if (path.startsWith("//")) path = path.slice(2); // sqlite:///abs -> /abs
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(path)) {
    throw new StoreError(`unsupported store URI scheme: ${uri}`);
  }
  if (path === ":memory:") return path;
  if (path === "") throw new StoreError("empty SQLite path");
  if (path.endsWith("/") || isDirectory(path)) return join(path, SQLITE_FILE_NAME);
  return path;
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
