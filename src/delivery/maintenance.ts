// The scheduled purge: expired epoch history, KeyPackages, remembered refs of
// consumed KeyPackages and finished rate-limit windows (which also hold the
// ClientAuth replay cache) are deleted every `intervalMs`, so none of those
// tables grows with time. Every instance may run it: purgeExpired is one
// idempotent transaction.
import type { Logger } from "pino";
import type { PurgeResult, Store } from "../store/port.js";

export interface Purger {
  /** Runs one purge now (also what the timer calls). */
  runOnce(): Promise<PurgeResult | undefined>;
  stop(): void;
}

export function startPurger(store: Store, intervalMs: number, logger?: Logger, now: () => number = Date.now): Purger {
  let running: Promise<PurgeResult | undefined> | undefined;
  const runOnce = (): Promise<PurgeResult | undefined> => {
    // One at a time: a slow purge is not stacked under the next tick.
    running ??= store
      .purgeExpired(now())
      .then(
        (r) => {
          const total = r.historyEntries + r.keyPackages + r.rateLimits + (r.consumedKeyPackages ?? 0);
          if (total > 0) logger?.info({ purged: r }, "purged expired data");
          return r;
        },
        (err: unknown) => {
          logger?.warn({ err }, "purge failed; will retry");
          return undefined;
        },
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => void runOnce(), intervalMs);
  timer.unref();
  return { runOnce, stop: () => clearInterval(timer) };
}
