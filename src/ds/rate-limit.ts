// Rate limits of DSRequests (draft Section 11): per client, per group and per
// sending domain, each a fixed window kept in this instance's memory (so
// several instances behind one name each allow the configured rate).
import { DSErrorCode } from "../wire/index.js";
import { failWith } from "./errors.js";

export interface RateRule {
  /** Requests allowed per window. */
  readonly limit: number;
  readonly windowMs: number;
}

export interface RateLimits {
  readonly perClient?: RateRule;
  readonly perGroup?: RateRule;
  readonly perDomain?: RateRule;
}

/** "N/s", "N/m" or "N/h" (e.g. from a command-line flag). */
export function parseRateRule(text: string): RateRule {
  const m = /^(\d+)\/(s|m|h)$/.exec(text.trim());
  if (m === null) throw new Error(`a rate is N/s, N/m or N/h, not ${JSON.stringify(text)}`);
  return { limit: Number(m[1]), windowMs: { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s" | "m" | "h"] };
}

export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();
  private lastSweep = 0;

  constructor(
    readonly limits: RateLimits,
    private readonly now: () => number,
  ) {}

  /** Count one request against `key`; rate_limited when the window is full. */
  hit(kind: keyof RateLimits, key: string): void {
    const rule = this.limits[kind];
    if (rule === undefined) return;
    const t = this.now();
    this.sweep(t);
    const k = `${kind}:${key}`;
    let w = this.windows.get(k);
    if (w === undefined || t - w.start >= rule.windowMs) this.windows.set(k, (w = { start: t, count: 0 }));
    if (w.count >= rule.limit)
      failWith(DSErrorCode.rate_limited, `rate limit for this ${kind.slice(3).toLowerCase()} reached (${rule.limit} per ${rule.windowMs} ms); retry in ${w.start + rule.windowMs - t} ms`);
    w.count++;
  }

  // Forget finished windows now and then so the map stays as large as the active set.
  private sweep(t: number): void {
    if (t - this.lastSweep < 60_000) return;
    this.lastSweep = t;
    const longest = Math.max(...Object.values(this.limits).map((r) => (r as RateRule).windowMs));
    for (const [k, w] of this.windows) if (t - w.start >= longest) this.windows.delete(k);
  }
}
