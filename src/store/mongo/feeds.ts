// A client's place in a group feed, as the MongoDB adapter keeps it, and the
// bounded steps of pulling from it. Pure: unit-tested against a model with a
// seeded random driver (test/store/mongo-unit.test.ts).
//
// Why skip ranges: joinFeed of a client that left with entries still pending
// must give it those entries before the new membership's. SQLite copies them
// all in the join; here one transaction must stay far below MongoDB's 60 s
// transaction lifetime on every retry, so the join copies a bounded number and
// keeps the rest pending, skipping the entries appended while the client was
// away: (until, head at the re-join].

/** Feed sequences (from, to] that the client does not receive. */
export type SkipRange = readonly [from: bigint, to: bigint];

export interface Membership {
  /** Last feed sequence received or passed. */
  readonly cursor: bigint;
  /** Last feed sequence it receives once it left; undefined while a member. */
  readonly until: bigint | undefined;
  /** Ascending, disjoint, all above `cursor` (normalized) and at or below `until`. */
  readonly skip: readonly SkipRange[];
}

export interface FeedRow {
  readonly seq: bigint;
  /** Client ids that do not receive the entry (its sender). */
  readonly except?: readonly string[] | undefined;
  /** Payload bytes, for the byte budget. */
  readonly size: number;
}

/** A range (after, upto] of feed sequences to read next. */
export interface FeedRange {
  readonly after: bigint;
  readonly upto: bigint;
}

const min = (a: bigint, b: bigint): bigint => (a < b ? a : b);

/** What the membership receives up to: its leave point, or the feed head while a member. */
export const endOf = (m: Membership, head: bigint): bigint => m.until ?? head;

/** Skip ranges the cursor has reached are passed: the cursor moves to their end. */
export function normalize(m: Membership): Membership {
  let cursor = m.cursor;
  let i = 0;
  while (i < m.skip.length && m.skip[i]![0] <= cursor) {
    if (m.skip[i]![1] > cursor) cursor = m.skip[i]![1];
    i++;
  }
  return i === 0 ? m : { cursor, until: m.until, skip: m.skip.slice(i) };
}

/** Whether the membership has ended: left, and nothing before its leave point is pending. */
export function finished(m: Membership): boolean {
  return m.until !== undefined && normalize(m).cursor >= m.until;
}

/** The next range to read, or undefined when nothing is pending. `m` must be normalized. */
export function nextRange(m: Membership, head: bigint): FeedRange | undefined {
  const end = endOf(m, head);
  if (m.cursor >= end) return undefined;
  const next = m.skip[0];
  const upto = next ? min(next[0], end) : end;
  return upto > m.cursor ? { after: m.cursor, upto } : undefined;
}

export interface PullStep<R extends FeedRow = FeedRow> {
  /** Rows to copy into the client's queue, in feed order. */
  readonly copy: readonly R[];
  /** The membership after this step (normalized). */
  readonly member: Membership;
  /** Rows looked at (copied or not for the client). */
  readonly scanned: number;
  /** A copy or byte budget stopped the step before the rows were used up. */
  readonly stopped: boolean;
}

/**
 * Use the rows one read of `range` returned (ascending, at most `limit` of
 * them): copy those for the client until `maxCopies` rows or `maxBytes` bytes
 * are copied (the row that reaches the byte budget is copied, so a pull always
 * moves) and move the cursor past what was looked at. Fewer rows than `limit`
 * mean the range holds no more: the cursor moves to its end.
 */
export function consumeRows<R extends FeedRow>(
  m: Membership,
  range: FeedRange,
  rows: readonly R[],
  limit: number,
  clientId: string,
  maxCopies: number,
  maxBytes: number,
): PullStep<R> {
  const copy: R[] = [];
  let cursor = m.cursor;
  let bytes = 0;
  let scanned = 0;
  let stopped = false;
  for (const row of rows) {
    if (copy.length >= maxCopies || bytes >= maxBytes) {
      stopped = true;
      break;
    }
    if (row.seq <= range.after || row.seq > range.upto) throw new RangeError(`feed row ${row.seq} outside (${range.after}, ${range.upto}]`);
    scanned++;
    cursor = row.seq;
    if (row.except?.includes(clientId)) continue;
    copy.push(row);
    bytes += row.size;
  }
  if (!stopped && rows.length < limit) cursor = range.upto;
  return { copy, member: normalize({ cursor, until: m.until, skip: m.skip }), scanned, stopped };
}

export interface PullResult<R extends FeedRow> {
  readonly member: Membership;
  readonly copy: readonly R[];
  readonly bytes: number;
  readonly scanned: number;
}

/**
 * Pull from one membership with bounded work: at most `maxCopies` rows copied
 * and looked at, about `maxBytes` payload bytes, reads of at most `pageMax`
 * rows. `read(range, limit)` returns the feed rows in (after, upto], ascending,
 * at most `limit`.
 */
export async function pullMembership<R extends FeedRow>(
  start: Membership,
  head: bigint,
  clientId: string,
  maxCopies: number,
  maxBytes: number,
  pageMax: number,
  read: (range: FeedRange, limit: number) => Promise<readonly R[]>,
): Promise<PullResult<R>> {
  let m = normalize(start);
  const copy: R[] = [];
  let bytes = 0;
  let scanned = 0;
  while (copy.length < maxCopies && scanned < maxCopies && bytes < maxBytes) {
    const range = nextRange(m, head);
    if (!range) break;
    const limit = Math.max(1, Math.min(pageMax, maxCopies - scanned));
    const step = consumeRows(m, range, await read(range, limit), limit, clientId, maxCopies - copy.length, maxBytes - bytes);
    for (const row of step.copy) bytes += row.size;
    copy.push(...step.copy);
    scanned += step.scanned;
    m = step.member;
    if (step.stopped) break;
  }
  return { member: m, copy, bytes, scanned };
}

/** The client stops receiving after `head` (no change if it already left). */
export function leave(m: Membership, head: bigint): Membership {
  return m.until !== undefined ? m : { cursor: m.cursor, until: head, skip: m.skip };
}

/**
 * The membership that starts at a join with the feed at `head`: a new one at
 * the head; a current one unchanged; a left one whose pending entries were all
 * pulled starts afresh; a left one with entries still pending keeps them and
 * skips what was appended while it was away.
 */
export function rejoin(m: Membership | undefined, head: bigint): Membership {
  if (m === undefined) return { cursor: head, until: undefined, skip: [] };
  if (m.until === undefined) return m;
  const n = normalize(m);
  const until = m.until;
  if (n.cursor >= until) return { cursor: head, until: undefined, skip: [] };
  if (head <= until) return { cursor: n.cursor, until: undefined, skip: n.skip };
  const last = n.skip[n.skip.length - 1];
  const skip: SkipRange[] =
    last !== undefined && last[1] === until ? [...n.skip.slice(0, -1), [last[0], head]] : [...n.skip, [until, head]];
  return { cursor: n.cursor, until: undefined, skip };
}
