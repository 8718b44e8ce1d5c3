// Stored document shapes of the MongoDB adapter that carry more than a field
// or two, built and read in one place. Stored formats are contracts: the BSON
// of each is pinned by a golden test (test/store/mongo-unit.test.ts).

import type { KeyPackageUpload, StoredKeyPackage } from "../port.js";
import type { BlobRef } from "./blobs.js";
import type { Membership, SkipRange } from "./feeds.js";
import type { Doc } from "./schema.js";
import { copyBytes } from "./values.js";

const big = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number));

// ---------------------------------------------------------------------------
// key_packages {clientId, ciphersuite, ref, keyPackage, lastResort, expiresAt, createdAt, n}

/**
 * The documents of one publish: the regular packages, then the last-resort
 * one, numbered from `first` on with the client's age counter (clients.kpSeq),
 * so "oldest first" is publish order on every instance.
 */
export function keyPackageDocs(
  clientId: string,
  first: bigint,
  keyPackages: readonly KeyPackageUpload[],
  lastResort: KeyPackageUpload | undefined,
  now: number,
): Doc[] {
  const all = [...keyPackages.map((kp) => ({ kp, lastResort: false })), ...(lastResort ? [{ kp: lastResort, lastResort: true }] : [])];
  return all.map(({ kp, lastResort }, i) => ({
    clientId,
    ciphersuite: kp.ciphersuite,
    ref: kp.ref,
    keyPackage: kp.keyPackage,
    lastResort,
    expiresAt: kp.expiresAt ?? null,
    createdAt: now,
    n: first + BigInt(i),
  }));
}

export function keyPackageOf(d: Doc): StoredKeyPackage {
  const base = {
    clientId: String(d.clientId),
    ref: copyBytes(d.ref),
    ciphersuite: Number(d.ciphersuite),
    keyPackage: copyBytes(d.keyPackage),
    lastResort: d.lastResort === true,
  };
  return d.expiresAt == null ? base : { ...base, expiresAt: Number(d.expiresAt) };
}

// ---------------------------------------------------------------------------
// feed_members {clientId, groupId, cursor, until, skip: [[from, to], ...]}

export function membershipDoc(clientId: string, groupId: string, m: Membership): Doc {
  return { clientId, groupId, cursor: m.cursor, until: m.until ?? null, skip: m.skip.map(([a, b]) => [a, b]) };
}

/** A stored membership; documents written before skip ranges existed have none. */
export function membershipOf(d: Doc): Membership {
  const skip: SkipRange[] = Array.isArray(d.skip) ? (d.skip as unknown[][]).map((r) => [big(r[0]), big(r[1])] as const) : [];
  return { cursor: big(d.cursor), until: d.until == null ? undefined : big(d.until), skip };
}

// ---------------------------------------------------------------------------
// history {groupId, epoch, ratchetTree, treeless, groupInfo, joiners, expiresAt, ttlAt}

export function historyDoc(
  groupId: string,
  epoch: bigint,
  ratchetTree: Uint8Array | BlobRef,
  treeless: boolean,
  groupInfo: Uint8Array | BlobRef | null,
  joiners: readonly Uint8Array[],
  expiresAt: number,
  ttlAt: Date,
): Doc {
  return { groupId, epoch, ratchetTree, treeless, groupInfo, joiners: [...joiners], expiresAt, ttlAt };
}
