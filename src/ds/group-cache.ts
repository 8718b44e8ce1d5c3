// The parsed-group cache, bounded by memory (docs/security.md, issue 13 item
// 9): least recently used groups leave first once the estimated bytes of all
// cached groups exceed the budget (or their number exceeds maxCount).
//
// A group's weight is estimated from its encoded state, which the DS knows
// without re-encoding: the stored snapshot and log at load, then the bytes of
// each commit or proposal it accepts (a snapshot written by a commit resets
// the count). Measured on this engine (bench-free, one process, heap after
// GC): a parsed group takes about 4x its encoded bytes when large credentials
// dominate, and about 3-5 KiB per member for small ones, so the estimate is
//   4 x encoded + 3.5 KiB x members + 16 KiB
// which stays above the measured size in both regimes (docs/security.md).
import type { WriteOp } from "../store/port.js";
import type { HostedGroup } from "./groups.js";

const PER_ENCODED_BYTE = 4;
const PER_MEMBER = 3584;
const PER_GROUP = 16 * 1024;

/** How the encoded size of a group changed with the request that produced it. */
export type EncodedSize = { readonly bytes: number } | { readonly delta: number };

/** How a request's writes change the group's encoded size: a snapshot sets it, log entries and proposals add to it. */
export function encodedSizeChange(writes: readonly WriteOp[]): EncodedSize {
  let delta = 0;
  for (const op of writes) {
    if (op.kind === "createGroup") return { bytes: op.snapshot.length };
    if (op.kind === "advanceGroup") {
      if (op.snapshot !== undefined) return { bytes: op.snapshot.length };
      delta += op.logEntry.length;
    } else if (op.kind === "addProposal") delta += op.proposal.length;
  }
  return { delta };
}

export const estimatedBytes = (encoded: number, members: number): number => PER_ENCODED_BYTE * encoded + PER_MEMBER * members + PER_GROUP;

interface Entry {
  readonly group: HostedGroup;
  /** Encoded bytes (snapshot + log + proposals) this group stands for. */
  readonly encoded: number;
  readonly weight: number;
}

export class GroupCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(
    readonly maxBytes: number,
    readonly maxCount: number,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The estimated bytes of every cached group. */
  get weight(): number {
    return this.bytes;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The group, marked as most recently used. */
  get(key: string): HostedGroup | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.group;
  }

  /** Without touching its recency (a peek). */
  peek(key: string): HostedGroup | undefined {
    return this.entries.get(key)?.group;
  }

  delete(key: string): void {
    const e = this.entries.get(key);
    if (e === undefined) return;
    this.entries.delete(key);
    this.bytes -= e.weight;
  }

  /**
   * Cache `group` as most recently used. `size` is its encoded size, or how it
   * changed from the cached version; without it, the cached version's size is
   * kept (or, for a group not cached, `fallback()` measures it).
   */
  put(group: HostedGroup, size: EncodedSize | undefined, fallback: () => number): void {
    const old = this.entries.get(group.key);
    const encoded =
      size !== undefined && "bytes" in size ? size.bytes : old !== undefined ? Math.max(0, old.encoded + (size !== undefined ? size.delta : 0)) : fallback();
    this.delete(group.key);
    const weight = estimatedBytes(encoded, group.state.tree.memberCount);
    this.entries.set(group.key, { group, encoded, weight });
    this.bytes += weight;
    // The group just put stays even when it alone is over the budget: the next request needs it.
    while (this.entries.size > 1 && (this.bytes > this.maxBytes || this.entries.size > this.maxCount)) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
    }
  }
}
