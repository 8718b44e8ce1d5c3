// grpc.health.v1.Health, written from the vendored health.proto (connect-node
// has no health package). "" is the whole server; every served service has its
// own entry. All turn NOT_SERVING when the server starts draining.
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HealthCheckResponseSchema } from "../../gen/grpc/health/v1/health_pb.js";

export { ServingStatus };

/** The List RPC refuses to answer more than this many services (health.proto). */
const maxListed = 100;

export class HealthRegistry {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #listeners = new Set<() => void>();
  #draining = false;

  constructor(serviceNames: readonly string[]) {
    this.#statuses.set("", ServingStatus.SERVING);
    for (const name of serviceNames) this.#statuses.set(name, ServingStatus.SERVING);
  }

  get draining(): boolean {
    return this.#draining;
  }

  status(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  entries(): ReadonlyMap<string, ServingStatus> {
    return this.#statuses;
  }

  set(service: string, status: ServingStatus): void {
    if (this.#draining) return; // Draining is final.
    this.#statuses.set(service, status);
    this.#notify();
  }

  /** Marks everything NOT_SERVING for good; open Watch streams report it and end. */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    for (const name of this.#statuses.keys()) this.#statuses.set(name, ServingStatus.NOT_SERVING);
    this.#notify();
  }

  /** Resolves at the next change (or when `signal` aborts). */
  nextChange(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = (): void => {
        this.#listeners.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.#listeners.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }
}

type HealthReply = MessageInitShape<typeof HealthCheckResponseSchema>;

export function registerHealth(router: ConnectRouter, registry: HealthRegistry): void {
  router.service(Health, {
    check(req: HealthCheckRequest): HealthReply {
      const status = registry.status(req.service);
      if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return { status };
    },
    list() {
      const entries = registry.entries();
      if (entries.size > maxListed) throw new ConnectError("too many services", Code.ResourceExhausted);
      const statuses: Record<string, HealthReply> = {};
      for (const [name, status] of entries) statuses[name] = { status };
      return { statuses };
    },
    async *watch(req: HealthCheckRequest, ctx: HandlerContext): AsyncIterable<HealthReply> {
      let last: ServingStatus | undefined;
      while (!ctx.signal.aborted) {
        const status = registry.status(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
        const changed = registry.nextChange(ctx.signal);
        if (status !== last) {
          last = status;
          yield { status } satisfies HealthReply;
        }
        // A draining server ends its watches once they have seen NOT_SERVING,
        // so that they do not hold the shutdown back.
        if (registry.draining) return;
        await changed;
      }
    },
  });
}

export type { HealthCheckResponse };
