// mimi.ds.v1.FanoutService on the hub (draft Section 6.2): a guest DS,
// authenticated by mutual TLS, streams the outbox the hub keeps for its
// domain (DSFanoutRequests, appended by src/ds/fanout.ts in the same
// transaction as the request that caused them; group messages stored as
// head and message, signed here as they go out) and acknowledges each entry
// with the DSFanoutResponse it produced. A guest may take heads by reference
// and signatures over the head's digest (docs/federation.md "Heads by
// reference"), so a message costs the same for 10 or 10,000 recipients.
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import { requestContext } from "../server/context.js";
import { serviceRoute, type ServiceRoute } from "../server/server.js";
import { outboxQueue, type Store } from "../store/port.js";
import { WireDecodeError, decodeDSFanoutResponse, dsFanoutErrorCodeName, type DSFanoutError } from "../wire/index.js";
import { headDigest, streamedTail, wholeRequest } from "../ds/fanout.js";
import type { HubIdentity } from "../ds/hub-identity.js";
import { mapped, rpcError } from "./errors.js";
import { DEFAULT_PAGE_SIZE, streamQueue } from "./queue-stream.js";

export interface FanoutServiceOptions {
  readonly store: Store;
  /** Signs outbox entries stored unsigned (src/ds/fanout.ts) as they are streamed. */
  readonly hub: HubIdentity;
  readonly logger?: Logger;
  /** Outbox entries read per page (default 64). */
  readonly pageSize?: number;
  /**
   * Called for every DSFanoutResponse of type error a guest sends (after the
   * entry is acknowledged), e.g. to count it or to act on rejected recipients.
   */
  readonly onRejected?: (rejection: FanoutRejection) => void;
}

/** A guest DS refused (part of) one DSFanoutRequest. */
export interface FanoutRejection {
  readonly guestDomain: string;
  readonly sequence: bigint;
  readonly error: DSFanoutError;
}

/** Counters of what guests answered, by guest domain. */
export interface FanoutStats {
  readonly acknowledged: ReadonlyMap<string, bigint>;
  /** Error responses by "<domain> <code name>". */
  readonly rejected: ReadonlyMap<string, number>;
}

export interface FanoutServiceHandle {
  readonly route: ServiceRoute;
  readonly impl: ServiceImpl<typeof FanoutService>;
  readonly stats: FanoutStats;
  /** Ends every open Subscribe stream with Unavailable (call before server.close()). */
  close(): void;
}

const EMPTY = new Uint8Array(0);

/** Heads a guest keeps per stream (SubscribeResponse.head_id): the most recently introduced. */
export const HEADS_KEPT = 16;

/**
 * The hub's half of a stream's head ids: which stored prefix each of the
 * HEADS_KEPT most recently introduced ids names. A head introduced before
 * those is introduced again under a new id, so the guest never needs more.
 */
class HeadsSent {
  #next = 1n;
  readonly #ids = new Map<string, SentHead>();

  idFor(prefixId: string): { readonly sent: SentHead; readonly introduce: boolean } {
    const known = this.#ids.get(prefixId);
    // In the map means among the HEADS_KEPT most recently introduced (it holds those, in introduction order).
    if (known !== undefined) return { sent: known, introduce: false };
    const sent: SentHead = { headId: this.#next++ };
    this.#ids.set(prefixId, sent);
    if (this.#ids.size > HEADS_KEPT) this.#ids.delete(this.#ids.keys().next().value!);
    return { sent, introduce: true };
  }
}

interface SentHead {
  readonly headId: bigint;
  /** SHA-256 of the head, computed once per stream when a signature needs it. */
  digest?: Uint8Array;
}

function guestDomainOf(ctx: HandlerContext): string {
  const peer = requestContext(ctx).peerDomain;
  if (peer === undefined) {
    throw new ConnectError("FanoutService needs a client certificate of a peer DS (mutual TLS)", Code.Unauthenticated);
  }
  return peer;
}

export function createFanoutService(options: FanoutServiceOptions): FanoutServiceHandle {
  const { store, logger, hub } = options;
  const stop = new AbortController();
  const acknowledged = new Map<string, bigint>();
  const rejected = new Map<string, number>();

  const impl: ServiceImpl<typeof FanoutService> = {
    async *subscribe(req, ctx) {
      const guest = guestDomainOf(ctx);
      logger?.info({ guest, resumeAfter: req.resumeAfter.toString() }, "fanout subscriber connected");
      const entries = streamQueue(store, outboxQueue(guest), req.resumeAfter, {
        signal: ctx.signal,
        stop: stop.signal,
        pageSize: options.pageSize ?? DEFAULT_PAGE_SIZE,
      });
      const heads = req.headsByReference ? new HeadsSent() : undefined;
      const digests = heads !== undefined && req.headDigestSignatures;
      try {
        for await (const e of entries) {
          if (heads === undefined || e.prefix === undefined) {
            yield { sequence: e.seq, dsFanoutRequest: await wholeRequest(hub, e) };
            continue;
          }
          // Outbox prefixes are the heads of DSFanoutRequests (src/ds/fanout.ts), signed here unless stored signed.
          const { bytes: head, rest: own } = e.prefix;
          const { sent, introduce } = heads.idFor(e.prefix.id);
          const out = await streamedTail(hub, head, own, digests ? () => (sent.digest ??= headDigest(head)) : undefined);
          yield { sequence: e.seq, headId: sent.headId, head: introduce ? head : EMPTY, tail: out.tail, headDigestSignature: out.headDigestSigned };
        }
      } catch (err) {
        throw rpcError(err);
      }
    },

    acknowledge: (req, ctx) =>
      mapped(async () => {
        const guest = guestDomainOf(ctx);
        const queue = outboxQueue(guest);
        let error: DSFanoutError | undefined;
        try {
          const res = decodeDSFanoutResponse(req.dsFanoutResponse);
          if (res.responseBody.responseType === "error") error = res.responseBody.error;
        } catch (err) {
          if (err instanceof WireDecodeError) {
            throw new ConnectError(`ds_fanout_response does not decode: ${err.message}`, Code.InvalidArgument);
          }
          throw err;
        }
        const { lastSeq } = await store.queueInfo(queue);
        if (req.sequence > lastSeq) {
          throw new ConnectError(`sequence ${req.sequence} was never sent (last is ${lastSeq})`, Code.InvalidArgument);
        }
        // The entry is acknowledged whatever the answer: a rejection is final
        // (retrying the same signed request would be rejected again); guests
        // that cannot take an entry yet (rate limit) do not acknowledge it.
        await store.ack(queue, req.sequence);
        acknowledged.set(guest, req.sequence);
        if (error !== undefined) {
          const name = dsFanoutErrorCodeName(error.code) ?? `code_${error.code}`;
          const key = `${guest} ${name}`;
          rejected.set(key, (rejected.get(key) ?? 0) + 1);
          const recipients = error.rejectedRecipients.map((r) => new TextDecoder().decode(r));
          logger?.warn({ guest, sequence: req.sequence.toString(), code: name, message: error.message, rejectedRecipients: recipients }, "guest DS rejected a fanout");
          options.onRejected?.({ guestDomain: guest, sequence: req.sequence, error });
        }
        return {};
      }),
  };

  return {
    route: serviceRoute(FanoutService, impl),
    impl,
    stats: { acknowledged, rejected },
    close: () => stop.abort(),
  };
}
