// Counters and histograms for the hot path, exposed through a prom-client
// Registry (which formats them with everything else it holds). prom-client's
// own label children validate and hash their labels on every increment and
// observation (an object and a string per call); these children are plain
// numbers looked up once per label set, so counting a request allocates
// nothing.
import type { Registry } from "prom-client";

export interface CounterChild {
  inc(n?: number): void;
}

export interface HistogramChild {
  observe(value: number): void;
}

interface Sample {
  readonly labels: Record<string, string>;
  readonly value: number;
  readonly metricName?: string;
}

const keyOf = (values: readonly string[]): string => values.join("\u0000");

abstract class FastMetric<C> {
  readonly #children = new Map<string, { labels: Record<string, string>; child: C }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    // The Registry reads name, help, type and get(): the shape of its own metrics.
    registry.registerMetric(this as unknown as Parameters<Registry["registerMetric"]>[0]);
  }

  abstract readonly type: "counter" | "histogram";
  protected abstract make(): C;
  protected abstract samples(labels: Record<string, string>, child: C): Sample[];

  /** The child for these label values (in labelNames order), made on first use. */
  child(...values: string[]): C {
    if (values.length !== this.labelNames.length) throw new Error(`${this.name} wants ${this.labelNames.length} label values`);
    const key = keyOf(values);
    let entry = this.#children.get(key);
    if (entry === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => (labels[n] = values[i]!));
      entry = { labels, child: this.make() };
      this.#children.set(key, entry);
    }
    return entry.child;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    const values: Sample[] = [];
    for (const { labels, child } of this.#children.values()) values.push(...this.samples(labels, child));
    return { name: this.name, help: this.help, type: this.type, aggregator: "sum", values };
  }
}

export class FastCounter extends FastMetric<CounterChild & { value: number }> {
  readonly type = "counter";

  protected make(): CounterChild & { value: number } {
    return {
      value: 0,
      inc(n = 1) {
        this.value += n;
      },
    };
  }

  protected samples(labels: Record<string, string>, child: { value: number }): Sample[] {
    return [{ labels, value: child.value }];
  }

  /** Increment by label values (a lookup per call: for rare events). */
  inc(values: readonly string[], n = 1): void {
    this.child(...values).inc(n);
  }
}

interface HistogramState extends HistogramChild {
  /** Per bucket (the last is +Inf), not cumulative. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

export class FastHistogram extends FastMetric<HistogramState> {
  readonly type = "histogram";
  readonly #bounds: Float64Array;

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[], registry: Registry) {
    super(name, help, labelNames, registry);
    this.#bounds = Float64Array.from([...buckets].sort((a, b) => a - b));
  }

  protected make(): HistogramState {
    const bounds = this.#bounds;
    return {
      counts: new Float64Array(bounds.length + 1),
      sum: 0,
      count: 0,
      observe(value: number) {
        let i = 0;
        while (i < bounds.length && value > bounds[i]!) i++;
        this.counts[i]!++;
        this.sum += value;
        this.count++;
      },
    };
  }

  protected samples(labels: Record<string, string>, h: HistogramState): Sample[] {
    const out: Sample[] = [];
    let cumulative = 0;
    for (let i = 0; i <= this.#bounds.length; i++) {
      cumulative += h.counts[i]!;
      const le = i < this.#bounds.length ? String(this.#bounds[i]) : "+Inf";
      out.push({ metricName: `${this.name}_bucket`, labels: { le, ...labels }, value: cumulative });
    }
    out.push({ metricName: `${this.name}_sum`, labels, value: h.sum });
    out.push({ metricName: `${this.name}_count`, labels, value: h.count });
    return out;
  }
}
