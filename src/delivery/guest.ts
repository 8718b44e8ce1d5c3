// The guest DS side of fanout (draft Section 6.2): check a hub's
// DSFanoutRequest and queue its MLSMessage for our recipients, at most once
// per (hub, sequence); and the consumer that subscribes to every configured
// hub over mutual TLS and acknowledges what it processed.
import { createClient, type Client } from "@connectrpc/connect";
import type { MLSMessage } from "ts-mls";
import type { Logger } from "pino";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import { verifyFanoutSignature } from "../ds/hub-identity.js";
import { domainOf } from "../mls/index.js";
import { clientQueue, type RateLimitRule, type Store, type WriteOp } from "../store/port.js";
import {
  type ClientID,
  type Codec,
  DS_PROTOCOL_VERSION,
  DSFanoutErrorCode,
  type DSFanoutErrorCodeName,
  type DSFanoutResponse,
  type FanoutAuthToken,
  SignatureLabel,
  dsFanoutRequestHeadFields,
  decodeWith,
  encodeDSFanoutResponse,
  mlsMessageCodec,
  opaqueV,
  struct,
  mlsMessageGroupId,
} from "../wire/index.js";
import { checkToken, loadLocalClient } from "./clients.js";
import { type OwnTls, type PeerDirectory, createPeerTransport, type Peer, type PeerTransportOptions } from "./peers.js";
import type { FanoutTokenKeys } from "./tokens.js";

// ---------------------------------------------------------------- decoding with slices

interface Sliced {
  readonly message: MLSMessage;
  readonly start: number;
  readonly end: number;
}
// The MLSMessage is forwarded as received: remember where it lies in the input.
const slicedMessage: Codec<Sliced> = {
  encode: () => {
    throw new Error("decode only");
  },
  decode: (d) => {
    const start = d.offset;
    const message = mlsMessageCodec.decode(d);
    return { message, start, end: d.offset };
  },
};

interface ReceivedFanout {
  readonly protocolVersion: number;
  readonly hubDomain: string;
  readonly recipientIds: readonly ClientID[];
  readonly fanoutAuthTokens: readonly FanoutAuthToken[];
  readonly mlsMessage: Sliced;
  readonly signature: Uint8Array;
}
const receivedFanoutCodec = struct<ReceivedFanout>([
  ...dsFanoutRequestHeadFields,
  ["mls_message", "mlsMessage", slicedMessage],
  ["signature", "signature", opaqueV],
]);


// ---------------------------------------------------------------- processing one request

export interface GuestDeps {
  /** This DS's domain. */
  readonly domain: string;
  readonly store: Store;
  readonly tokens: FanoutTokenKeys;
  /** The hubs we accept fanout from, with their DS signature keys. */
  readonly peers: PeerDirectory;
  /** Fanout requests accepted per hub domain and window; none: unlimited. */
  readonly rateLimit?: RateLimitRule;
  readonly now?: () => number;
  readonly logger?: Logger;
  /**
   * The rfc9420 client policy (docs/interop.md): a recipient with an empty
   * FanoutAuthToken is accepted when it is a registered client of ours. The
   * hub is then trusted on its mutual-TLS identity and signature alone for
   * whom it sends to (standard MLS clients have no tokens).
   */
  readonly acceptTokenless?: boolean;
}

export interface FanoutOutcome {
  /** What to acknowledge the entry with. */
  readonly response: DSFanoutResponse;
  /** True when (hub, sequence) had been processed before: nothing was queued again. */
  readonly duplicate: boolean;
  /** Recipients whose queue got the message. */
  readonly delivered: readonly string[];
  /**
   * Set for rate_limited: the entry is not processed (not marked, not to be
   * acknowledged); try again at this time (ms).
   */
  readonly retryAt?: number;
}

const okResponse: DSFanoutResponse = { protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "ok" } };

function errorResponse(code: DSFanoutErrorCodeName, message: string, rejected: readonly ClientID[] = []): DSFanoutResponse {
  return {
    protocolVersion: DS_PROTOCOL_VERSION,
    responseBody: { responseType: "error", error: { code: DSFanoutErrorCode[code], message, rejectedRecipients: rejected } },
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const keyOf = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** The at-most-once source name of a hub's stream (store markProcessed). */
export const fanoutSource = (hubDomain: string): string => hubDomain.toLowerCase();

/**
 * Checks one DSFanoutRequest from `hubDomain` (the mutual-TLS-authenticated
 * hub) at `sequence` of its stream and queues its MLSMessage for every
 * accepted recipient, in one store transaction with the at-most-once mark.
 * Rejections (final: the entry is acknowledged with them) are also marked
 * processed; a rate-limited entry is not (see `retryAt`). Store failures throw.
 */
export async function processFanoutRequest(deps: GuestDeps, hubDomain: string, sequence: bigint, bytes: Uint8Array): Promise<FanoutOutcome> {
  const hub = hubDomain.toLowerCase();
  const source = fanoutSource(hub);
  const now = deps.now?.() ?? Date.now();
  const { store, logger } = deps;

  if (await store.isProcessed(source, sequence)) return { response: okResponse, duplicate: true, delivered: [] };

  if (deps.rateLimit !== undefined) {
    const r = await store.rateLimit(`fanout:${hub}`, deps.rateLimit, now);
    if (!r.allowed) {
      logger?.warn({ hub, sequence: sequence.toString(), resetAt: r.resetAt }, "fanout rate limit reached");
      return {
        response: errorResponse("rate_limited", `more than ${deps.rateLimit.limit} fanout requests in ${deps.rateLimit.windowMs} ms`),
        duplicate: false,
        delivered: [],
        retryAt: r.resetAt,
      };
    }
  }

  /** A final rejection of the whole request: marked processed so it is never looked at again. */
  const reject = async (code: DSFanoutErrorCodeName, message: string, rejected: readonly ClientID[] = []): Promise<FanoutOutcome> => {
    const applied = await store.apply({ ops: [{ kind: "markProcessed", source, sequence }] });
    logger?.warn({ hub, sequence: sequence.toString(), code, reason: message }, "fanout rejected");
    return applied.duplicate
      ? { response: okResponse, duplicate: true, delivered: [] }
      : { response: errorResponse(code, message, rejected), duplicate: false, delivered: [] };
  };

  let req: ReceivedFanout;
  try {
    req = decodeWith(receivedFanoutCodec, bytes, "DSFanoutRequest");
  } catch (err) {
    return reject("malformed", `DSFanoutRequest does not decode: ${(err as Error).message}`);
  }
  if (req.protocolVersion !== DS_PROTOCOL_VERSION) {
    return reject("unsupported_version", `protocol version ${req.protocolVersion} is not supported (want ${DS_PROTOCOL_VERSION})`);
  }
  if (req.hubDomain.toLowerCase() !== hub) {
    return reject("bad_signature", `hub_domain ${req.hubDomain} is not the authenticated hub ${hub}`);
  }
  const peer = deps.peers.get(hub);
  if (peer === undefined) return reject("bad_signature", `no DS signature key is configured for ${hub}`);
  const tbs = bytes.subarray(0, req.mlsMessage.end);
  if (!(await verifyFanoutSignature(peer.dsSignatureKey, SignatureLabel.DSFanoutRequest, tbs, req.signature))) {
    return reject("bad_signature", `signature does not verify with the DS signature key of ${hub}`);
  }
  if (req.recipientIds.length !== req.fanoutAuthTokens.length) {
    return reject("malformed", `${req.recipientIds.length} recipients but ${req.fanoutAuthTokens.length} tokens`);
  }

  const groupId = mlsMessageGroupId(req.mlsMessage.message);
  const unknown: ClientID[] = [];
  const badToken: ClientID[] = [];
  const blocked: ClientID[] = [];
  const accepted: string[] = [];
  const seen = new Set<string>();
  for (const [i, raw] of req.recipientIds.entries()) {
    let clientId: string;
    try {
      clientId = utf8.decode(raw);
    } catch {
      unknown.push(raw);
      continue;
    }
    if (seen.has(clientId)) continue;
    seen.add(clientId);
    if (domainOf(clientId) !== deps.domain.toLowerCase()) {
      unknown.push(raw);
      continue;
    }
    const client = await loadLocalClient(store, clientId);
    const token = req.fanoutAuthTokens[i]!.token;
    const check = token.length === 0 && deps.acceptTokenless === true && client !== undefined ? "ok" : checkToken(deps.tokens, client, clientId, token, now);
    if (check === "unknown_client") unknown.push(raw);
    else if (check === "invalid_token") badToken.push(raw);
    else if (
      client!.auth.blockedDomains.includes(hub) ||
      (groupId !== undefined && client!.auth.blockedGroups.some((g) => keyOf(g) === keyOf(groupId)))
    ) {
      blocked.push(raw);
    } else accepted.push(clientId);
  }

  const message = bytes.slice(req.mlsMessage.start, req.mlsMessage.end);
  const ops: WriteOp[] = [{ kind: "markProcessed", source, sequence }];
  for (const clientId of accepted) ops.push({ kind: "append", queue: clientQueue(clientId), payload: message });
  const applied = await store.apply({ ops });
  if (applied.duplicate) return { response: okResponse, duplicate: true, delivered: [] };

  const rejected = [...unknown, ...badToken, ...blocked];
  if (rejected.length === 0) return { response: okResponse, duplicate: false, delivered: accepted };
  // One code per response: the first kind of rejection found, in this order;
  // rejected_recipients lists every refused recipient.
  const code: DSFanoutErrorCodeName = unknown.length > 0 ? "unknown_recipient" : badToken.length > 0 ? "invalid_token" : "blocked";
  const parts = [
    unknown.length > 0 ? `${unknown.length} not a client of ${deps.domain}` : "",
    badToken.length > 0 ? `${badToken.length} with an invalid FanoutAuthToken` : "",
    blocked.length > 0 ? `${blocked.length} blocking this sender` : "",
  ].filter((p) => p !== "");
  const text = `${rejected.length} of ${seen.size} recipients refused (${parts.join(", ")}); delivered to ${accepted.length}`;
  logger?.warn(
    { hub, sequence: sequence.toString(), code, rejected: rejected.map((r) => Buffer.from(r).toString("utf8")) },
    "fanout recipients refused",
  );
  return { response: errorResponse(code, text, rejected), duplicate: false, delivered: accepted };
}

// ---------------------------------------------------------------- where to resume

const MAX_SEQ = (1n << 63n) - 1n;

/**
 * The highest sequence of `source` marked processed (0 if none), found with
 * isProcessed by galloping and bisection (about 2 log2(n) reads): the store
 * keeps the high-water mark but has no read for it.
 */
export async function processedHighWater(store: Store, source: string): Promise<bigint> {
  if (!(await store.isProcessed(source, 1n))) return 0n;
  let lo = 1n;
  let hi = 2n;
  while (await store.isProcessed(source, hi)) {
    lo = hi;
    if (hi === MAX_SEQ) return hi;
    hi = hi * 2n > MAX_SEQ ? MAX_SEQ : hi * 2n;
  }
  while (hi - lo > 1n) {
    const mid = (lo + hi) / 2n;
    if (await store.isProcessed(source, mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------- the consumer

export interface GuestConsumerOptions extends GuestDeps {
  /** Our client certificate and key (DNS SAN = our domain), presented to every hub. */
  readonly tls: OwnTls;
  /** Domains to subscribe to; default every configured peer. */
  readonly hubs?: readonly string[];
  /** Reconnect delay after an error: doubles from initialMs up to maxMs (default 200 ms .. 30 s). */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  readonly transport?: PeerTransportOptions;
}

export interface HubStatus {
  readonly hub: string;
  readonly connected: boolean;
  /** Highest sequence processed in this process's lifetime (or found at start). */
  readonly processed: bigint;
  readonly lastError?: string;
}

type FanoutClient = Client<typeof FanoutService>;

/**
 * Acknowledgements sent in order without holding up processing: consecutive
 * ok answers collapse into one Acknowledge (it acknowledges everything up to
 * its sequence); error answers are each sent, so the hub sees every rejection.
 */
class AckPipeline {
  private readonly pending: { sequence: bigint; response: Uint8Array; ok: boolean }[] = [];
  private running: Promise<void> | undefined;
  /** Why an Acknowledge failed (the stream is then aborted). */
  failure: unknown;

  constructor(
    private readonly client: FanoutClient,
    private readonly signal: AbortSignal,
    private readonly onFailure: () => void,
  ) {}

  push(sequence: bigint, response: DSFanoutResponse): void {
    if (this.failure !== undefined) throw this.failure;
    this.pending.push({ sequence, response: encodeDSFanoutResponse(response), ok: response.responseBody.responseType === "ok" });
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        let item = this.pending.shift()!;
        if (item.ok) while (this.pending[0]?.ok === true) item = this.pending.shift()!;
        await this.client.acknowledge({ sequence: item.sequence, dsFanoutResponse: item.response }, { signal: this.signal });
      }
    } catch (err) {
      this.failure = err;
      this.onFailure();
    } finally {
      this.running = undefined;
    }
  }

  async flush(): Promise<void> {
    while (this.running !== undefined) await this.running;
    if (this.failure !== undefined) throw this.failure;
  }
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal.addEventListener("abort", done, { once: true });
  });

/**
 * Subscribes to each hub's FanoutService, processes every DSFanoutRequest in
 * order and acknowledges it; reconnects with backoff; resumes after the
 * highest sequence processed, so nothing is lost or queued twice.
 */
export class GuestConsumer {
  private readonly stopper = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly state = new Map<string, { connected: boolean; processed: bigint | undefined; lastError?: string }>();
  private started = false;

  constructor(private readonly options: GuestConsumerOptions) {}

  start(): void {
    if (this.started) throw new Error("GuestConsumer already started");
    this.started = true;
    const hubs = this.options.hubs ?? this.options.peers.peers.map((p) => p.domain);
    for (const h of hubs) {
      const peer = this.options.peers.get(h);
      if (peer === undefined) throw new Error(`hub ${h} is not a configured peer`);
      this.state.set(peer.domain, { connected: false, processed: undefined });
      this.loops.push(this.run(peer));
    }
  }

  status(): HubStatus[] {
    return [...this.state].map(([hub, s]) => ({
      hub,
      connected: s.connected,
      processed: s.processed ?? 0n,
      ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
    }));
  }

  /** Closes every subscription and waits for the loops to end. */
  async stop(): Promise<void> {
    this.stopper.abort();
    await Promise.all(this.loops);
  }

  private async run(peer: Peer): Promise<void> {
    const { logger, store } = this.options;
    const initial = this.options.backoff?.initialMs ?? 200;
    const max = this.options.backoff?.maxMs ?? 30_000;
    const stop = this.stopper.signal;
    const st = this.state.get(peer.domain)!;
    let delay = initial;
    while (!stop.aborted) {
      const transport = createPeerTransport(peer, this.options.tls, this.options.transport);
      const call = new AbortController();
      const signal = AbortSignal.any([stop, call.signal]);
      let acks: AckPipeline | undefined;
      try {
        const client = createClient(FanoutService, transport);
        st.processed ??= await processedHighWater(store, fanoutSource(peer.domain));
        acks = new AckPipeline(client, signal, () => call.abort());
        const stream = client.subscribe({ resumeAfter: st.processed }, { signal });
        for await (const entry of stream) {
          if (!st.connected) logger?.info({ hub: peer.domain, resumeAfter: st.processed.toString() }, "subscribed to hub");
          st.connected = true;
          delete st.lastError;
          delay = initial;
          let outcome = await processFanoutRequest(this.options, peer.domain, entry.sequence, entry.dsFanoutRequest);
          // Rate limited: hold the stream (the hub keeps the entry) until the window ends.
          while (outcome.retryAt !== undefined && !signal.aborted) {
            await sleep(outcome.retryAt - (this.options.now?.() ?? Date.now()), signal);
            if (signal.aborted) break;
            outcome = await processFanoutRequest(this.options, peer.domain, entry.sequence, entry.dsFanoutRequest);
          }
          if (outcome.retryAt !== undefined) break;
          st.processed = entry.sequence;
          acks.push(entry.sequence, outcome.response);
        }
        await acks.flush();
        if (!stop.aborted) throw new Error("the hub ended the stream");
      } catch (err) {
        if (stop.aborted) break;
        // An aborted stream after a failed Acknowledge: report the Acknowledge's error.
        st.lastError = ((acks?.failure ?? err) as Error).message;
        logger?.warn({ hub: peer.domain, err: st.lastError, retryInMs: delay }, "fanout subscription failed");
      } finally {
        st.connected = false;
        call.abort();
        transport.close();
      }
      await sleep(delay, stop);
      delay = Math.min(delay * 2, max);
    }
  }
}
