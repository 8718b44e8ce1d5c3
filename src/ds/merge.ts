// The one place where a staged request becomes durable: its store writes and
// the queue appends of its fanout go to the store in one atomic batch, and
// only then does the in-memory group change and the response go out.
import type { WriteOp } from "../store/port.js";
import type { DSResponse } from "../wire/index.js";
import type { DSContext } from "./context.js";
import { planFanout, type FanoutItem } from "./fanout.js";
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

export const answerOnly = (response: DSResponse): StagedRequest => ({ response, writes: [], fanout: [] });

/**
 * Makes `staged` durable, then updates the cached group. `release` (the
 * group's lock) is called early when the store applies writes in call order
 * and the request leaves the group as it is (send_message): the group's next
 * request may then be staged while this write waits for its fsync, and its
 * write still lands after this one.
 */
export async function mergeStaged(ctx: DSContext, staged: StagedRequest, release?: () => void): Promise<DSResponse> {
  const appends = await planFanout(ctx.hub, staged.fanout);
  const ops = [...staged.writes, ...appends];
  const g = staged.group;
  if (ops.length > 0) {
    const durable = ctx.store.apply({ ops });
    if (g === undefined && release !== undefined && ctx.store.appliesInOrder === true) release();
    await durable;
  }
  if (g !== undefined) {
    if ("next" in g) ctx.groups.put(g.next);
    else ctx.groups.evict(g.evict);
  }
  return staged.response;
}
