// Outboxes that nobody drains are bounded (docs/security.md, issue 13 item
// 10): a hub keeps each DSFanoutRequest in the outbox of its destination
// domain until that domain's DS acknowledges it. A domain that never comes
// for them (removed from the peers, gone, or never a peer: members of such
// domains are refused now, but groups stored before may still hold some)
// would make the outbox grow without bound. So, every `intervalMs`, entries
// older than `maxAgeMs`, and all but the newest `maxEntries` of each outbox,
// are dropped and the count is logged. A peer that is down longer than the
// retention loses what was queued for it (like mail bounced after days); its
// clients resync by external commit.
import type { Logger } from "pino";
import type { Store } from "../store/port.js";

export interface OutboxRetention {
  readonly maxAgeMs: number;
  readonly maxEntries: number;
  readonly intervalMs: number;
}

export const DEFAULT_OUTBOX_RETENTION: OutboxRetention = Object.freeze({
  maxAgeMs: 7 * 24 * 3_600_000,
  maxEntries: 1_000_000,
  intervalMs: 10 * 60_000,
});

export interface OutboxPurge {
  /** One pass now; resolves with the number of entries dropped. */
  runOnce(): Promise<number>;
  stop(): void;
}

export function startOutboxPurge(store: Store, retention: OutboxRetention, options: { readonly logger?: Logger; readonly now?: () => number } = {}): OutboxPurge {
  const now = options.now ?? Date.now;
  let running: Promise<number> | undefined;
  const runOnce = (): Promise<number> => {
    running ??= store
      .trimQueues("outbox:", { enqueuedBefore: now() - retention.maxAgeMs, keepLast: retention.maxEntries })
      .then((dropped) => {
        if (dropped > 0) options.logger?.warn({ dropped, maxAgeMs: retention.maxAgeMs, maxEntries: retention.maxEntries }, "outbox entries nobody fetched were dropped");
        return dropped;
      })
      .finally(() => (running = undefined));
    return running;
  };
  const timer = setInterval(() => {
    runOnce().catch((err: unknown) => options.logger?.error({ err }, "outbox purge failed"));
  }, Math.max(1000, retention.intervalMs));
  timer.unref();
  return { runOnce, stop: () => clearInterval(timer) };
}
