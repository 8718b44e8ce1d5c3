// Receiver: a client's queue as a loop that survives its connection. It opens
// ClientService/Receive, hands each entry to a handler, acknowledges it once
// the handler returned, and when the stream breaks (server restart, network,
// deadline) it reconnects with backoff and resumes after the last entry
// handled, so every entry reaches the handler once and in order. Resuming
// after N acknowledges everything up to N on the server too, so an
// acknowledgement lost with the connection is made good by the reconnect.
//
// Errors that a retry cannot fix (authentication, permission, bad request)
// end the loop with that error; so does a handler that throws (its entry is
// not acknowledged and will be delivered again by the next Receiver).
import { Code, ConnectError } from "@connectrpc/connect";
import type { LocalClientApi, QueuedMessage } from "./local.js";

export interface ReceiverOptions {
  /** Resume after this sequence (entries up to it count as handled); default 0. */
  readonly resumeAfter?: bigint;
  /** Stops the loop: run() then resolves. */
  readonly signal?: AbortSignal;
  /** First reconnect delay; doubles per failed attempt (with jitter). Default 200 ms. */
  readonly initialDelayMs?: number;
  /** Longest reconnect delay. Default 10 s. */
  readonly maxDelayMs?: number;
  /** Give up after this many reconnects in a row without an entry; default unlimited. */
  readonly maxAttempts?: number;
  /** Called before each reconnect, with what broke the stream. */
  readonly onReconnect?: (info: { readonly error: unknown; readonly attempt: number; readonly delayMs: number }) => void;
  /** Acknowledge every n-th entry (and on stop; a reconnect's resume acknowledges too); default 1. */
  readonly ackEvery?: number;
}

/** Statuses a reconnect cannot fix. */
const fatal = new Set<Code>([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.NotFound,
  Code.Unimplemented,
  Code.FailedPrecondition,
  Code.OutOfRange,
]);

export class ReceiverError extends Error {
  override readonly name = "ReceiverError";
}

export class Receiver {
  private handled: bigint;
  private acked: bigint;
  private readonly ackEvery: number;

  constructor(
    private readonly local: LocalClientApi,
    private readonly options: ReceiverOptions = {},
  ) {
    this.handled = options.resumeAfter ?? 0n;
    this.acked = this.handled;
    this.ackEvery = Math.max(1, options.ackEvery ?? 1);
  }

  /** The last sequence handed to the handler and finished. */
  get lastHandled(): bigint {
    return this.handled;
  }

  /** The last sequence acknowledged to the DS. */
  get lastAcknowledged(): bigint {
    return this.acked;
  }

  /**
   * Runs until `signal` aborts (resolves) or a fatal error (rejects). Each
   * entry is passed to `handler` once, in queue order, and acknowledged after
   * the handler's promise resolved.
   */
  async run(handler: (message: QueuedMessage) => Promise<void> | void): Promise<void> {
    const signal = this.options.signal;
    const initial = this.options.initialDelayMs ?? 200;
    const max = this.options.maxDelayMs ?? 10_000;
    let attempt = 0;
    let sinceAck = 0;
    while (!signal?.aborted) {
      const stream = new AbortController();
      const stop = () => stream.abort();
      signal?.addEventListener("abort", stop, { once: true });
      let error: unknown;
      try {
        for await (const m of this.local.receive(this.handled, stream.signal)) {
          // A reconnect may replay entries the server had not yet seen acknowledged.
          if (m.sequence <= this.handled) continue;
          await handler(m);
          this.handled = m.sequence;
          attempt = 0;
          if (++sinceAck >= this.ackEvery) {
            sinceAck = 0;
            await this.acknowledge();
          }
        }
        error = new ConnectError("the DS ended the Receive stream", Code.Unavailable);
      } catch (err) {
        error = err;
      } finally {
        signal?.removeEventListener("abort", stop);
      }
      if (signal?.aborted) break;
      if (error instanceof ConnectError && fatal.has(error.code)) throw error;
      if (!(error instanceof ConnectError)) throw error; // the handler's own failure
      attempt++;
      if (this.options.maxAttempts !== undefined && attempt > this.options.maxAttempts) {
        throw new ReceiverError(`Receive failed ${attempt - 1} times in a row; last: ${error.message}`, { cause: error });
      }
      const delayMs = Math.round(Math.min(max, initial * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2));
      this.options.onReconnect?.({ error, attempt, delayMs });
      await sleep(delayMs, signal);
    }
    await this.acknowledge().catch(() => undefined); // best effort: the next Receiver's resume covers it
  }

  /** Acknowledges everything handled so far (a no-op when nothing is new). */
  async acknowledge(): Promise<void> {
    const upTo = this.handled;
    if (upTo <= this.acked) return;
    try {
      await this.local.acknowledge(upTo);
      if (upTo > this.acked) this.acked = upTo;
    } catch (err) {
      // A lost acknowledgement is repaired by resuming after `handled`; only fatal ones matter.
      if (err instanceof ConnectError && fatal.has(err.code)) throw err;
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
