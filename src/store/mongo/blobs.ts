// Large opaque values (group snapshots, retained snapshots, history trees and
// GroupInfos, log entries) split into chunk documents, so no document comes
// near MongoDB's 16 MiB limit: a snapshot of a 10,000-member group with X.509
// credentials is 8-25 MB, and a snapshot write that fails every time would stop
// the group from advancing. Pure: the adapter writes and reads the documents.
//
// A value up to `inline` bytes stays in its field as Binary. A larger one is
// replaced in its field by a BlobRef {blob, n, size} and stored as n documents
// of `blob_chunks` {b: blob id, i: 0..n-1, g: group id, data}, each at most
// `chunkDoc` bytes of BSON (the `_id` the driver adds included). `g` lets a
// group's deletion drop all of its chunks with one delete.

import { BSON } from "mongodb";
import { StoreError, StoreRangeError } from "../errors.js";

export interface BlobLimits {
  /** Values up to this many bytes stay inline. */
  readonly inline: number;
  /** Most BSON bytes of one chunk document. */
  readonly chunkDoc: number;
}

const MiB = 1024 * 1024;
/** Two inline values (a history entry's tree and GroupInfo) and the rest still fit one 16 MiB document. */
export const DEFAULT_BLOB_LIMITS: BlobLimits = { inline: 4 * MiB, chunkDoc: 8 * MiB };

/** What the field of a chunked value holds. */
export interface BlobRef {
  readonly blob: string;
  readonly n: number;
  readonly size: number;
}

/** One stored chunk (the driver adds `_id`). */
export interface ChunkDoc {
  readonly b: string;
  readonly i: number;
  readonly g: string;
  readonly data: Uint8Array;
}

export interface EncodedBlob {
  /** The field's value: the bytes themselves, or the reference to the chunks. */
  readonly value: Uint8Array | BlobRef;
  readonly chunks: readonly ChunkDoc[];
}

/** BSON size of the `_id: ObjectId` the driver adds to each chunk: type, "_id\0", 12 bytes. */
const OBJECT_ID_FIELD = 1 + 4 + 12;

/** Payload bytes per chunk so that a chunk document of this blob and group is at most `chunkDoc` bytes. */
export function chunkPayload(blobId: string, groupId: string, limits: BlobLimits): number {
  const overhead = BSON.calculateObjectSize({ b: blobId, i: 0x7fffffff, g: groupId, data: new Uint8Array(0) }) + OBJECT_ID_FIELD;
  const per = limits.chunkDoc - overhead;
  if (per < 1) throw new StoreRangeError(`a chunk of ${limits.chunkDoc} bytes cannot hold data for group id of ${groupId.length} characters`);
  return per;
}

export function encodeBlob(bytes: Uint8Array, groupId: string, blobId: string, limits: BlobLimits = DEFAULT_BLOB_LIMITS): EncodedBlob {
  if (bytes.byteLength <= limits.inline) return { value: bytes, chunks: [] };
  const per = chunkPayload(blobId, groupId, limits);
  const chunks: ChunkDoc[] = [];
  for (let off = 0, i = 0; off < bytes.byteLength; off += per, i++) {
    chunks.push({ b: blobId, i, g: groupId, data: bytes.subarray(off, Math.min(bytes.byteLength, off + per)) });
  }
  return { value: { blob: blobId, n: chunks.length, size: bytes.byteLength }, chunks };
}

export function isBlobRef(v: unknown): v is BlobRef {
  if (typeof v !== "object" || v === null || v instanceof Uint8Array) return false;
  const r = v as Record<string, unknown>;
  return typeof r.blob === "string" && isCount(r.n) && isCount(r.size);
}

const isCount = (v: unknown): boolean => (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) || typeof v === "bigint";

/** The blob ids referenced by these field values (inline values and absent fields have none). */
export function blobIdsOf(values: readonly unknown[]): string[] {
  const ids = new Set<string>();
  for (const v of values) if (isBlobRef(v)) ids.add(v.blob);
  return [...ids];
}

/**
 * Reassemble a chunked value from its chunks (any order). A missing, extra or
 * mis-sized chunk is a damaged store: an error, never a short value.
 */
export function assembleBlob(ref: BlobRef, chunks: readonly { readonly i: unknown; readonly data: unknown }[]): Uint8Array {
  const n = Number(ref.n);
  const size = Number(ref.size);
  const parts = new Array<Uint8Array | undefined>(n);
  for (const c of chunks) {
    const i = Number(c.i);
    if (!Number.isInteger(i) || i < 0 || i >= n || parts[i] !== undefined || !(c.data instanceof Uint8Array)) {
      throw new StoreError(`stored value ${ref.blob} is damaged: unexpected chunk ${String(c.i)} of ${n}`);
    }
    parts[i] = c.data;
  }
  const out = new Uint8Array(size);
  let off = 0;
  for (let i = 0; i < n; i++) {
    const p = parts[i];
    if (p === undefined) throw new StoreError(`stored value ${ref.blob} is damaged: chunk ${i} of ${n} is missing`);
    if (off + p.byteLength > size) throw new StoreError(`stored value ${ref.blob} is damaged: chunks exceed its ${size} bytes`);
    out.set(p, off);
    off += p.byteLength;
  }
  if (off !== size) throw new StoreError(`stored value ${ref.blob} is damaged: ${off} of ${size} bytes stored`);
  return out;
}
