// Start-up integrity of the data directory (issue 11): a DS refuses to start,
// with one line naming the problem and the flag that overrides it, rather
// than silently starting as someone else or as nobody:
//
//   - the database is missing or empty although this data dir had one
//     (--allow-empty-database);
//   - a key file (hub-keys.json, the FanoutAuthToken key) is missing beside an
//     existing database, or hub-keys.json is not the one the database was
//     created with (--allow-new-keys);
//   - the SQLite file is damaged: PRAGMA quick_check (--skip-quick-check skips
//     the check, for very large files);
//
// and it keeps what it writes private: the data dir is made 0700, the SQLite
// file and its -wal/-shm 0600 whatever the directory's mode.
//
// Key files without a database are legitimate (`mimi-ds keys` makes them
// before the first start, so that peers can be told the fanout key): what
// tells "never had a database" from "lost its database" is a marker,
// `<data-dir>/database-created.json`, written once the database has been
// created (or first seen) beside these keys. It also records a fingerprint
// of the hub's fanout key, so that another hub-keys.json is noticed.
import { createHash } from "node:crypto";
import { accessSync, chmodSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { sqlitePathOf, StoreError } from "../store/index.js";
import { ConfigError, errnoText } from "./config.js";

export const MARKER_FILE = "database-created.json";
export const HUB_KEY_FILE = "hub-keys.json";

interface Marker {
  readonly version: 1;
  /** Where the database was (a SQLite path, or a MongoDB URI without credentials). */
  readonly store: string;
  readonly createdAt: string;
  /** base64 SHA-256 of the hub's fanout (Ed25519) public key. */
  readonly fanoutKey?: string;
}

export interface IntegrityOptions {
  readonly dataDir: string;
  /** The --store value (a SQLite path or a mongodb:// URI). */
  readonly store: string;
  readonly fanoutTokenKey: string;
  readonly allowEmptyDatabase: boolean;
  readonly allowNewKeys: boolean;
  readonly skipQuickCheck: boolean;
}

export interface IntegrityResult {
  /** What was found and done, for the start-up log. */
  readonly notes: string[];
  /** Call once the store is open, before a key file is made: MongoDB's database in use needs its key files. */
  readonly checkDatabase: (databaseHasGroups: () => Promise<boolean>) => Promise<void>;
  /** Call once the keys are loaded: records the marker. */
  readonly confirm: (fanoutPublicKey: Uint8Array) => void;
}

const isMongo = (uri: string): boolean => /^mongodb(\+srv)?:\/\//i.test(uri);

/** A MongoDB URI with its password hidden (for logs and error lines). */
export function redactUri(uri: string): string {
  return uri.replace(/^(mongodb(?:\+srv)?:\/\/[^:/@]+):[^@/]*@/i, "$1:***@");
}

const fingerprint = (publicKey: Uint8Array): string => createHash("sha256").update(publicKey).digest("base64");

/** Creates the data dir (0700) or checks that the existing one is a writable directory. */
export function prepareDataDir(dir: string): string[] {
  const notes: string[] = [];
  if (existsSync(dir)) {
    const st = statSync(dir);
    if (!st.isDirectory()) throw new ConfigError(`--data-dir ${dir}: exists and is not a directory`);
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch (err) {
      throw new ConfigError(`--data-dir ${dir}: cannot write in it: ${errnoText(err)}`);
    }
    if ((st.mode & 0o077) !== 0) notes.push(`data dir ${dir} has mode ${(st.mode & 0o777).toString(8)}: others may list it (the files in it are 0600)`);
    return notes;
  }
  // mkdir -p reports ENOENT or EACCES for the directory itself when the real
  // problem is an ancestor: name the ancestor that stops it.
  let ancestor = dirname(dir);
  while (!existsSync(ancestor) && dirname(ancestor) !== ancestor) ancestor = dirname(ancestor);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const why = (() => {
      try {
        if (!statSync(ancestor).isDirectory()) return `${ancestor} is not a directory`;
        accessSync(ancestor, constants.W_OK | constants.X_OK);
      } catch (e) {
        return `${ancestor} is not writable: ${errnoText(e)}`;
      }
      return errnoText(err);
    })();
    throw new ConfigError(`--data-dir ${dir}: cannot create it: ${why}`);
  }
  notes.push(`created data dir ${dir} (mode 700)`);
  return notes;
}

/** The fanout key of an existing hub key file (undefined: no file); a bad file is a ConfigError. */
export function readHubKeyFile(file: string): Uint8Array | undefined {
  if (!existsSync(file)) return undefined;
  const bad = (why: string): never => {
    throw new ConfigError(`--data-dir: ${file} is not a valid hub key file (${why}): restore it from a backup`);
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    bad((err as NodeJS.ErrnoException).code !== undefined ? errnoText(err) : `not JSON: ${(err as Error).message}`);
  }
  // The format of src/ds/hub-identity.ts: {"version":1,"keys":{"<alg>":{"publicKey":b64,"privateKey":b64}}}.
  const f = parsed as { version?: unknown; keys?: Record<string, { publicKey?: unknown; privateKey?: unknown } | undefined> };
  if (typeof f !== "object" || f === null || f.version !== 1) bad('want {"version":1,"keys":{...}}');
  if (typeof f.keys !== "object" || f.keys === null) bad("no keys");
  for (const [alg, k] of Object.entries(f.keys!)) {
    if (typeof k?.publicKey !== "string" || typeof k.privateKey !== "string") bad(`keys.${alg} wants base64 publicKey and privateKey`);
  }
  const ed = f.keys!.Ed25519;
  if (ed === undefined) bad("no Ed25519 key: the fanout signing key is missing");
  const publicKey = new Uint8Array(Buffer.from(ed!.publicKey as string, "base64"));
  if (publicKey.length !== 32) bad(`the Ed25519 public key has ${publicKey.length} bytes, want 32`);
  return publicKey;
}

function readMarker(file: string): Marker | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const m = JSON.parse(readFileSync(file, "utf8")) as Marker;
    if (m.version === 1 && typeof m.store === "string") return m;
  } catch {
    // unreadable: treated as a damaged marker below
  }
  throw new ConfigError(`--data-dir: ${file} is damaged: it records where this data dir's database was; restore it, or delete it if the database and key files are right`);
}

type SqliteState = "absent" | "empty" | "present";

/** Opens the existing SQLite file (never creates it), checks it and reports whether it holds a schema. */
function inspectSqlite(path: string, quickCheck: boolean): SqliteState {
  if (!existsSync(path)) return "absent";
  const st = statSync(path);
  if (!st.isFile()) throw new ConfigError(`--store ${path}: not a regular file`);
  if (st.size === 0) return "empty";
  let db: Database.Database | undefined;
  const damaged = (why: string): never => {
    throw new ConfigError(`--store ${path}: the database is damaged (${why}): restore it from a backup (docs/operations.md, Backups)`);
  };
  try {
    db = new Database(path, { fileMustExist: true });
    const version = Number(db.pragma("user_version", { simple: true }));
    if (quickCheck) {
      const rows = db.pragma("quick_check") as { quick_check: string }[];
      const problems = rows.map((r) => r.quick_check).filter((r) => r !== "ok");
      if (problems.length > 0) damaged(`quick_check: ${problems[0]}${problems.length > 1 ? ` and ${problems.length - 1} more` : ""}`);
    }
    const tables = Number(db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").pluck().get());
    return version === 0 && tables === 0 ? "empty" : "present";
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as { code?: string }).code ?? "";
    if (/^SQLITE_(CORRUPT|NOTADB)/.test(code)) damaged(`${code}: ${(err as Error).message}`);
    if (/^SQLITE_(CANTOPEN|READONLY|PERM|AUTH)/.test(code) || (err as NodeJS.ErrnoException).errno !== undefined) {
      throw new ConfigError(`--store ${path}: cannot open it: ${(err as Error).message}`);
    }
    throw new ConfigError(`--store ${path}: ${(err as Error).message}`);
  } finally {
    db?.close();
  }
}

/** 0600 for the database and its WAL and shared-memory files, whatever the directory's mode. */
function privateFiles(path: string, notes: string[]): void {
  for (const f of [path, `${path}-wal`, `${path}-shm`]) {
    if (!existsSync(f)) continue;
    const mode = statSync(f).mode & 0o777;
    if ((mode & 0o077) === 0) continue;
    try {
      chmodSync(f, 0o600);
    } catch (err) {
      throw new ConfigError(`--store ${f}: has mode ${mode.toString(8)} and cannot be made private (0600): ${errnoText(err)}`);
    }
    notes.push(`${f} had mode ${mode.toString(8)}: now 600 (it holds queues, client records and members' tokens)`);
  }
}

/**
 * Checks the data dir, the database and the key files before anything is
 * opened; a new SQLite file is created empty with mode 0600 here (SQLite
 * gives its -wal and -shm files the database file's mode).
 */
export function checkStartupIntegrity(o: IntegrityOptions): IntegrityResult {
  const notes = prepareDataDir(o.dataDir);
  const hubKeyFile = join(o.dataDir, HUB_KEY_FILE);
  const markerFile = join(o.dataDir, MARKER_FILE);
  const marker = readMarker(markerFile);
  const hubKey = readHubKeyFile(hubKeyFile);
  const tokenKey = existsSync(o.fanoutTokenKey);
  const missingKeys = [...(hubKey === undefined ? [hubKeyFile] : []), ...(tokenKey ? [] : [o.fanoutTokenKey])];
  const refuseMissingKeys = (where: string): never => {
    throw new ConfigError(
      `the database ${where} exists but ${missingKeys.join(" and ")} ${missingKeys.length > 1 ? "are" : "is"} missing: restore ${missingKeys.length > 1 ? "them" : "it"} from a backup (peers and existing groups depend on the keys), or pass --allow-new-keys to make new ones`,
    );
  };
  if (marker?.fanoutKey !== undefined && hubKey !== undefined && fingerprint(hubKey) !== marker.fanoutKey && !o.allowNewKeys) {
    throw new ConfigError(
      `${hubKeyFile} is not the hub key file this data dir's database was created with (fanout key ${fingerprint(hubKey).slice(0, 12)}…, expected ${marker.fanoutKey.slice(0, 12)}…): restore the right one, or pass --allow-new-keys to keep this one`,
    );
  }

  let sqlite: { path: string; state: SqliteState } | undefined;
  if (!isMongo(o.store)) {
    let path: string;
    try {
      path = sqlitePathOf(o.store);
    } catch (err) {
      if (err instanceof StoreError) throw new ConfigError(`--store ${o.store}: ${err.message}`);
      throw err;
    }
    if (path !== ":memory:") {
      const dir = dirname(path);
      // Only --data-dir is created: a --store elsewhere must name an existing directory
      // (a typo must not silently make a new, empty database somewhere else).
      if (!existsSync(dir)) throw new ConfigError(`--store ${path}: directory ${dir} does not exist (create it first; mimi-ds creates only --data-dir)`);
      if (!statSync(dir).isDirectory()) throw new ConfigError(`--store ${path}: ${dir} is not a directory`);
      try {
        accessSync(dir, constants.W_OK | constants.X_OK);
      } catch (err) {
        throw new ConfigError(`--store ${path}: cannot write in ${dir}: ${errnoText(err)}`);
      }
      privateFiles(path, notes);
      const state = inspectSqlite(path, !o.skipQuickCheck);
      sqlite = { path, state };
      if (state === "present") {
        if (missingKeys.length > 0 && !o.allowNewKeys) refuseMissingKeys(path);
      } else if (marker !== undefined && !o.allowEmptyDatabase) {
        throw new ConfigError(
          `the database ${path} is ${state === "absent" ? "missing" : "empty"}, but this data dir had one (${marker.store}, created ${marker.createdAt}; ${markerFile}): restore it from a backup, or pass --allow-empty-database to start with an empty one`,
        );
      }
      if (state === "absent") {
        try {
          closeSync(openSync(path, "wx", 0o600));
        } catch (err) {
          throw new ConfigError(`--store ${path}: cannot create it: ${errnoText(err)}`);
        }
      }
      if (state !== "present") notes.push(`new database ${path}${hubKey !== undefined ? " beside existing key files" : ""}`);
      else if (!o.skipQuickCheck) notes.push(`database ${path}: quick_check ok`);
    }
  }

  return {
    notes,
    async checkDatabase(databaseHasGroups) {
      if (sqlite === undefined && isMongo(o.store) && missingKeys.length > 0 && !o.allowNewKeys && (await databaseHasGroups())) {
        refuseMissingKeys(redactUri(o.store));
      }
    },
    confirm(fanoutPublicKey) {
      const fp = fingerprint(fanoutPublicKey);
      if (marker !== undefined && marker.fanoutKey === fp && (sqlite === undefined || sqlite.state === "present")) return;
      const next: Marker = {
        version: 1,
        store: sqlite?.path ?? redactUri(o.store),
        createdAt: marker !== undefined && sqlite?.state === "present" ? marker.createdAt : new Date().toISOString(),
        fanoutKey: fp,
      };
      writeFileSync(markerFile, JSON.stringify(next, null, 2) + "\n", { mode: 0o600 });
    },
  };
}
