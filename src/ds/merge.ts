// The one place where a staged request becomes durable: its store writes and
// the queue appends of its fanout go to the store in one atomic batch, and
// only then does the in-memory group change and the response go out.
import type { WriteOp } from "../store/port.js";
import type { DSResponse } from "../wire/index.js";
import type { DSContext } from "./context.js";
import { planFanout, type FanoutItem } from "./fanout.js";
import { encodedSizeChange } from "./group-cache.js";
import type { HostedGroup } from "./groups.js";

export interface StagedRequest {
  /** The DSResponse to answer once everything is durable. */
  readonly response: DSResponse;
  /** State changes, preconditions included (epoch compare-and-set). */
  readonly writes: readonly WriteOp[];
  /** Messages the request causes. */
  readonly fanout: readonly FanoutItem[];
  /** The group as it is after the request (cached on success), or its key to forget. */
  readonly group?: { readonly next: HostedGroup } | { readonly evict: string };
}

const isFeedMembership = (op: WriteOp): boolean => op.kind === "joinFeed" || op.kind === "leaveFeed";

export const answerOnly = (response: DSResponse): StagedRequest => ({ response, writes: [], fanout: [] });

export async function mergeStaged(ctx: DSContext, staged: StagedRequest): Promise<DSResponse> {
  const appends = await planFanout(ctx.hub, staged.fanout);
  // Feed membership changes take effect after the request's own messages: a
  // joiner does not get the commit that added it, a removed member does.
  const membership = staged.writes.filter(isFeedMembership);
  const ops = membership.length === 0 ? [...staged.writes, ...appends] : [...staged.writes.filter((op) => !isFeedMembership(op)), ...appends, ...membership];
  if (ops.length > 0) await ctx.store.apply({ ops });
  const g = staged.group;
  if (g !== undefined) {
    if ("next" in g) ctx.groups.put(g.next, encodedSizeChange(staged.writes));
    else ctx.groups.evict(g.evict);
  }
  return staged.response;
}
