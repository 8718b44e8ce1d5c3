// The guest DS side of fanout (draft Section 6.2): check a hub's
// DSFanoutRequest and store its MLSMessage for our recipients, at most once
// per (hub, sequence); and the consumer that subscribes to every configured
// hub over mutual TLS and acknowledges what it processed.
//
// Delivery by feed (as on the hub, docs/storage.md "Group feeds"): a request
// for a group becomes one entry of the guest feed of (hub, group) for all its
// accepted recipients; each recipient's Receive stream pulls it into its own
// queue. The feed's membership follows the accepted recipient set: when the
// set changes, the clients that left it leave the feed and the new ones join,
// in the same transaction (a compare-and-set on the set, setFeedSet, keeps
// instances sharing a store consistent). Messages without a group id in
// clear (Welcome) still go to each recipient's queue.
//
// The consumer keeps several requests in flight: decoding, the signature
// check (on the threadpool) and the recipient checks (once per recipient
// set, src/delivery/recipients.ts) of later requests run while earlier ones
// are written; the writes go to the store in stream order, several requests
// per transaction, and their acknowledgements follow in stream order.
import { createClient, type Client } from "@connectrpc/connect";
import type { MLSMessage } from "ts-mls";
import type { Logger } from "pino";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import { HEADS_KEPT } from "./fanout-service.js";
import { headDigest, headDigestTbs } from "../ds/fanout.js";
import { verifyFanoutSignatureAsync } from "../ds/hub-identity.js";
import { concat } from "../mls/index.js";
import { FeedSetConflictError } from "../store/errors.js";
import { clientQueue, groupFeed, type RateLimitRule, type Store, type WriteOp } from "../store/port.js";
import {
  type ClientID,
  DEFAULT_LIMITS,
  Decoder,
  DS_PROTOCOL_VERSION,
  DSFanoutErrorCode,
  type DSFanoutErrorCodeName,
  type DSFanoutResponse,
  dsFanoutRequestHeadFields,
  encodeDSFanoutResponse,
  mlsMessageCodec,
  mlsMessageGroupId,
  opaqueV,
  SignatureLabel,
  WireDecodeError,
} from "../wire/index.js";
import { type OwnTls, type PeerDirectory, createPeerTransport, type Peer, type PeerTransportOptions } from "./peers.js";
import { RecipientChecks, type RecipientCheckStats, type RecipientVerdict } from "./recipients.js";
import type { FanoutTokenKeys } from "./tokens.js";

// ---------------------------------------------------------------- decoding

/**
 * The fields of a DSFanoutRequest before mls_message, cut without decoding the
 * recipient list: the list is only decoded when its bytes are not a list
 * already checked. Parsed once per head on a stream that sends heads by
 * reference (SubscribeResponse.head_id).
 */
export interface ReceivedHead {
  readonly protocolVersion: number;
  readonly hubDomain: string;
  /** Everything before mls_message (what the signature covers with the message). */
  readonly head: Uint8Array;
  /** recipient_ids<V> || fanout_auth_tokens<V>, a view into `head`. */
  readonly section: Uint8Array;
}

/** A DSFanoutRequest cut into its parts. */
interface ReceivedFanout extends ReceivedHead {
  readonly message: MLSMessage;
  /** The MLSMessage as received (forwarded unchanged), a view into the input. */
  readonly messageBytes: Uint8Array;
  readonly signature: Uint8Array;
}

const [[, , protocolVersionCodec], [, , hubDomainCodec]] = dsFanoutRequestHeadFields;
const skipVector = { encode: () => undefined, decode: (x: Decoder) => x.vector(() => x.skip(x.remaining)) };

function checkSize(length: number): void {
  if (length > DEFAULT_LIMITS.maxMessageSize) {
    throw new WireDecodeError("oversized", "DSFanoutRequest", 0, `message of ${length} bytes exceeds the limit of ${DEFAULT_LIMITS.maxMessageSize}`);
  }
}

function readHead(d: Decoder, bytes: Uint8Array): ReceivedHead {
  const protocolVersion = d.field("protocol_version", protocolVersionCodec);
  const hubDomain = d.field("hub_domain", hubDomainCodec);
  const sectionStart = d.offset;
  d.field("recipient_ids", skipVector);
  d.field("fanout_auth_tokens", skipVector);
  return { protocolVersion, hubDomain, head: bytes.subarray(0, d.offset), section: bytes.subarray(sectionStart, d.offset) };
}

function readTail(d: Decoder, bytes: Uint8Array, head: ReceivedHead): ReceivedFanout {
  const messageStart = d.offset;
  const message = d.field("mls_message", mlsMessageCodec);
  const messageEnd = d.offset;
  const signature = d.field("signature", opaqueV);
  d.expectEnd();
  return { ...head, message, messageBytes: bytes.subarray(messageStart, messageEnd), signature };
}

function parseFanout(bytes: Uint8Array): ReceivedFanout {
  checkSize(bytes.length);
  const d = new Decoder(bytes, "DSFanoutRequest");
  return readTail(d, bytes, readHead(d, bytes));
}

/**
 * A head sent by reference, or undefined when its bytes are not exactly the
 * head fields: an entry naming it is then taken as the whole request
 * head || tail, so the outcome is the same as for the request sent whole.
 */
function parseHead(bytes: Uint8Array): ReceivedHead | undefined {
  try {
    checkSize(bytes.length);
    const d = new Decoder(bytes, "DSFanoutRequest");
    const head = readHead(d, bytes);
    return d.offset === bytes.length ? head : undefined;
  } catch (err) {
    if (err instanceof WireDecodeError) return undefined;
    throw err;
  }
}

/**
 * What a stream entry carries: a whole request, or a head (sent earlier on the
 * stream) and the rest; `headDigest` is set when the rest's signature covers
 * the head's digest (FanoutHeadDigestTBS) instead of the whole request.
 */
export type FanoutInput =
  | Uint8Array
  | { readonly head: Uint8Array; readonly parsed: ReceivedHead | undefined; readonly tail: Uint8Array; readonly headDigest?: Uint8Array };

/** The request, and the head digest its signature covers if it is signed that way. */
function parseInput(input: FanoutInput): { req: ReceivedFanout; headDigest?: Uint8Array } {
  if (input instanceof Uint8Array) return { req: parseFanout(input) };
  if (input.parsed === undefined) {
    // Signed over a digest of bytes that are not a head: nothing to take as the request.
    if (input.headDigest !== undefined) throw new WireDecodeError("malformed", "DSFanoutRequest", 0, "the head sent by reference is not the DSFanoutRequest fields before mls_message");
    return { req: parseFanout(concat(input.head, input.tail)) };
  }
  checkSize(input.head.length + input.tail.length);
  const req = readTail(new Decoder(input.tail, "DSFanoutRequest"), input.tail, input.parsed);
  return input.headDigest !== undefined ? { req, headDigest: input.headDigest } : { req };
}

// ---------------------------------------------------------------- processing

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
   * The recipient checks' cache. Default: one per deps object (processFanoutRequest)
   * or per consumer. Shared by everything that processes fanout for one store.
   */
  readonly recipientChecks?: RecipientChecks;
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
  /** True when (hub, sequence) had been processed before: nothing was stored again. */
  readonly duplicate: boolean;
  /** Recipients the message was stored for (their feed or queue). */
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

/** The at-most-once source name of a hub's stream (store markProcessed). */
export const fanoutSource = (hubDomain: string): string => hubDomain.toLowerCase();

/**
 * The guest feed of a hub's group: `fanout:<hub>:<base64url group id>` (hub
 * group keys are base64url, so the names never meet).
 */
export const guestFeedId = (hubDomain: string, groupId: Uint8Array): string =>
  `fanout:${hubDomain.toLowerCase()}:${Buffer.from(groupId).toString("base64url")}`;

/** One request, checked and ready to be written (or rejected as a whole). */
type Prepared =
  | { readonly sequence: bigint; readonly kind: "reject"; readonly code: DSFanoutErrorCodeName; readonly reason: string }
  | {
      readonly sequence: bigint;
      readonly kind: "deliver";
      readonly message: Uint8Array;
      /** The guest feed, for messages with a group id in clear. */
      readonly feed: string | undefined;
      readonly verdict: RecipientVerdict;
    };

/** A guest feed's membership as last written by this process: the accepted set it follows. */
interface FeedState {
  readonly setId: string | undefined;
  readonly members: ReadonlySet<string>;
}

/** Most feed members remembered over all feeds (their states are re-read from the store when dropped). */
const MAX_FEED_MEMBERS_CACHED = 500_000;

/**
 * Checks and writes the requests of hubs' streams. prepare() may run for many
 * requests at once; write() must be called in stream order, one call at a
 * time per hub (the consumer does).
 */
export class FanoutProcessor {
  readonly checks: RecipientChecks;
  readonly #feeds = new Map<string, FeedState>();

  constructor(readonly deps: GuestDeps) {
    this.checks = deps.recipientChecks ?? new RecipientChecks();
  }

  /** Decode, verify, check the recipients: everything but the write. */
  async prepare(hubDomain: string, sequence: bigint, input: FanoutInput): Promise<Prepared> {
    const hub = hubDomain.toLowerCase();
    const reject = (code: DSFanoutErrorCodeName, reason: string): Prepared => ({ sequence, kind: "reject", code, reason });
    let req: ReceivedFanout;
    let digest: Uint8Array | undefined;
    try {
      ({ req, headDigest: digest } = parseInput(input));
    } catch (err) {
      if (err instanceof WireDecodeError) return reject("malformed", `DSFanoutRequest does not decode: ${err.message}`);
      throw err;
    }
    if (req.protocolVersion !== DS_PROTOCOL_VERSION) {
      return reject("unsupported_version", `protocol version ${req.protocolVersion} is not supported (want ${DS_PROTOCOL_VERSION})`);
    }
    if (req.hubDomain.toLowerCase() !== hub) return reject("bad_signature", `hub_domain ${req.hubDomain} is not the authenticated hub ${hub}`);
    const peer = this.deps.peers.get(hub);
    if (peer === undefined) return reject("bad_signature", `no DS signature key is configured for ${hub}`);
    const verified =
      digest === undefined
        ? await verifyFanoutSignatureAsync(peer.dsSignatureKey, [req.head, req.messageBytes], req.signature)
        : await verifyFanoutSignatureAsync(peer.dsSignatureKey, headDigestTbs(digest, req.messageBytes), req.signature, SignatureLabel.DSFanoutRequestHeadDigest);
    if (!verified) {
      return reject("bad_signature", `signature does not verify with the DS signature key of ${hub}`);
    }
    const groupId = mlsMessageGroupId(req.message);
    const now = this.deps.now?.() ?? Date.now();
    const verdict = await this.checks.verdict(this.deps, hub, groupId, req.section, now);
    if ("malformed" in verdict) return reject("malformed", verdict.malformed);
    return {
      sequence,
      kind: "deliver",
      message: new Uint8Array(req.messageBytes),
      feed: groupId !== undefined ? guestFeedId(hub, groupId) : undefined,
      verdict,
    };
  }

  /**
   * Writes prepared requests of `hubDomain`'s stream, in order, in one
   * transaction with their at-most-once marks. With a rate limit, stops at the
   * first request over it: the outcomes cover the requests before it and
   * `retryAt` says when to call again with the rest.
   */
  async write(hubDomain: string, items: readonly Prepared[]): Promise<{ outcomes: FanoutOutcome[]; retryAt?: number }> {
    const hub = hubDomain.toLowerCase();
    let admitted = items;
    let retryAt: number | undefined;
    if (this.deps.rateLimit !== undefined) {
      const rule = this.deps.rateLimit;
      for (let i = 0; i < items.length; i++) {
        const r = await this.deps.store.rateLimit(`fanout:${hub}`, rule, this.deps.now?.() ?? Date.now());
        if (!r.allowed) {
          this.deps.logger?.warn({ hub, sequence: items[i]!.sequence.toString(), resetAt: r.resetAt }, "fanout rate limit reached");
          admitted = items.slice(0, i);
          retryAt = r.resetAt;
          break;
        }
      }
    }
    const outcomes = admitted.length === 0 ? [] : await this.#writeAll(hub, admitted);
    return retryAt !== undefined ? { outcomes, retryAt } : { outcomes };
  }

  async #writeAll(hub: string, items: readonly Prepared[]): Promise<FanoutOutcome[]> {
    const source = fanoutSource(hub);
    for (let attempt = 0; ; attempt++) {
      const feeds = new Map<string, FeedState>();
      const ops: WriteOp[] = [];
      for (const item of items) ops.push(...(await this.#opsOf(source, item, feeds)));
      try {
        const applied = await this.deps.store.apply({ ops });
        if (applied.duplicate) {
          // Some were processed before (another instance on the store): one by one, each gets its own answer.
          if (items.length > 1) {
            const out: FanoutOutcome[] = [];
            for (const item of items) out.push(...(await this.#writeAll(hub, [item])));
            return out;
          }
          return [{ response: okResponse, duplicate: true, delivered: [] }];
        }
        for (const [feed, state] of feeds) this.#remember(feed, state);
        return items.map((item) => this.#outcome(hub, item));
      } catch (err) {
        // Another instance moved a feed to another set (or our state is old): re-read it and redo the batch.
        if (!(err instanceof FeedSetConflictError) || attempt >= 8) throw err;
        for (const feed of feeds.keys()) this.#feeds.delete(feed);
        this.#feeds.delete(err.groupId);
      }
    }
  }

  /** The ops of one request, moving `feeds` (the batch's working copy) to the state after it. */
  async #opsOf(source: string, item: Prepared, feeds: Map<string, FeedState>): Promise<WriteOp[]> {
    const ops: WriteOp[] = [{ kind: "markProcessed", source, sequence: item.sequence }];
    if (item.kind === "reject") return ops;
    const { accepted } = item.verdict;
    if (accepted.length === 0) return ops;
    if (item.feed === undefined) {
      for (const clientId of accepted) ops.push({ kind: "append", queue: clientQueue(clientId), payload: item.message });
      return ops;
    }
    const feed = item.feed;
    const before = feeds.get(feed) ?? this.#feeds.get(feed) ?? (await this.#load(feed));
    ops.push({ kind: "setFeedSet", groupId: feed, ...(before.setId !== undefined ? { expected: before.setId } : {}), setId: item.verdict.setId });
    let after = before;
    if (before.setId !== item.verdict.setId) {
      const next = new Set(accepted);
      // Those not in the new set stop before this entry; new ones receive it.
      for (const c of before.members) if (!next.has(c)) ops.push({ kind: "leaveFeed", groupId: feed, clientId: c });
      for (const c of accepted) if (!before.members.has(c)) ops.push({ kind: "joinFeed", groupId: feed, clientId: c });
      after = { setId: item.verdict.setId, members: next };
    }
    feeds.set(feed, after);
    ops.push({ kind: "append", queue: groupFeed(feed), payload: item.message });
    return ops;
  }

  async #load(feed: string): Promise<FeedState> {
    const [setId, members] = await Promise.all([this.deps.store.feedSet(feed), this.deps.store.feedMembers(feed)]);
    return { setId, members: new Set(members) };
  }

  #remember(feed: string, state: FeedState): void {
    this.#feeds.delete(feed);
    this.#feeds.set(feed, state);
    let total = 0;
    for (const s of this.#feeds.values()) total += s.members.size;
    for (const [k, s] of this.#feeds) {
      if (total <= MAX_FEED_MEMBERS_CACHED || k === feed) break;
      total -= s.members.size;
      this.#feeds.delete(k);
    }
  }

  #outcome(hub: string, item: Prepared): FanoutOutcome {
    const logger = this.deps.logger;
    if (item.kind === "reject") {
      logger?.warn({ hub, sequence: item.sequence.toString(), code: item.code, reason: item.reason }, "fanout rejected");
      return { response: errorResponse(item.code, item.reason), duplicate: false, delivered: [] };
    }
    const { accepted, unknown, badToken, blocked, distinct } = item.verdict;
    const rejected = [...unknown, ...badToken, ...blocked];
    if (rejected.length === 0) return { response: okResponse, duplicate: false, delivered: accepted };
    // One code per response: the first kind of rejection found, in this order;
    // rejected_recipients lists every refused recipient.
    const code: DSFanoutErrorCodeName = unknown.length > 0 ? "unknown_recipient" : badToken.length > 0 ? "invalid_token" : "blocked";
    const parts = [
      unknown.length > 0 ? `${unknown.length} not a client of ${this.deps.domain}` : "",
      badToken.length > 0 ? `${badToken.length} with an invalid FanoutAuthToken` : "",
      blocked.length > 0 ? `${blocked.length} blocking this sender` : "",
    ].filter((p) => p !== "");
    const text = `${rejected.length} of ${distinct} recipients refused (${parts.join(", ")}); delivered to ${accepted.length}`;
    logger?.warn(
      { hub, sequence: item.sequence.toString(), code, rejected: rejected.map((r) => Buffer.from(r).toString("utf8")) },
      "fanout recipients refused",
    );
    return { response: errorResponse(code, text, rejected), duplicate: false, delivered: accepted };
  }
}

const processors = new WeakMap<GuestDeps, FanoutProcessor>();

/**
 * Checks one DSFanoutRequest from `hubDomain` (the mutual-TLS-authenticated
 * hub) at `sequence` of its stream and stores its MLSMessage for every
 * accepted recipient, in one store transaction with the at-most-once mark.
 * Rejections (final: the entry is acknowledged with them) are also marked
 * processed; a rate-limited entry is not (see `retryAt`). Store failures throw.
 * The GuestConsumer does the same for many entries at once.
 */
export async function processFanoutRequest(deps: GuestDeps, hubDomain: string, sequence: bigint, bytes: Uint8Array): Promise<FanoutOutcome> {
  let processor = processors.get(deps);
  if (processor === undefined) processors.set(deps, (processor = new FanoutProcessor(deps)));
  if (await deps.store.isProcessed(fanoutSource(hubDomain), sequence)) return { response: okResponse, duplicate: true, delivered: [] };
  const prepared = await processor.prepare(hubDomain, sequence, bytes);
  const r = await processor.write(hubDomain, [prepared]);
  if (r.retryAt !== undefined) {
    const rule = deps.rateLimit!;
    return {
      response: errorResponse("rate_limited", `more than ${rule.limit} fanout requests in ${rule.windowMs} ms`),
      duplicate: false,
      delivered: [],
      retryAt: r.retryAt,
    };
  }
  return r.outcomes[0]!;
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
  /**
   * Reconnect delay after an error: doubles from initialMs up to maxMs
   * (default 200 ms .. 10 s), and starts again from initialMs after a
   * subscription that stayed up for a while (it was connected: the hub went
   * away, it did not refuse us), so delivery resumes soon after a hub restart.
   */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  readonly transport?: PeerTransportOptions;
  /** Requests of one hub's stream read ahead and checked while earlier ones are written (default 32). */
  readonly inFlight?: number;
  /** Most requests written in one store transaction (default 64). */
  readonly batch?: number;
  /**
   * Ask hubs for heads by reference (SubscribeRequest.heads_by_reference,
   * default true): a recipient list crosses the stream once per epoch, not
   * with every message. Hubs that do not know it send whole requests.
   */
  readonly headsByReference?: boolean;
  /**
   * With headsByReference, ask for entries by reference signed over the head's
   * digest (SubscribeRequest.head_digest_signatures, default true): the
   * signature check no longer hashes the recipient list per message.
   */
  readonly headDigestSignatures?: boolean;
}

/** A stream entry as the FanoutService sends it. */
interface StreamEntry {
  readonly sequence: bigint;
  readonly dsFanoutRequest: Uint8Array;
  readonly headId: bigint;
  readonly head: Uint8Array;
  readonly tail: Uint8Array;
  readonly headDigestSignature: boolean;
}

/** The guest's half of a stream's head ids: the HEADS_KEPT most recently introduced heads. */
class HeadsReceived {
  readonly #heads = new Map<bigint, { head: Uint8Array; parsed: ReceivedHead | undefined; digest?: Uint8Array }>();
  #last = 0n;

  /** `digests`: whether the stream asked for head-digest signatures. */
  constructor(private readonly digests: boolean) {}

  /** The entry's request as head and tail, or whole; throws when the hub breaks the stream's rules. */
  input(entry: StreamEntry): FanoutInput {
    if (entry.headDigestSignature && (!this.digests || entry.headId === 0n)) {
      throw new Error(`the hub signed entry ${entry.sequence} over a head digest ${entry.headId === 0n ? "without a head by reference" : "although it was not asked to"}`);
    }
    if (entry.headId === 0n) return entry.dsFanoutRequest;
    if (entry.head.length > 0) {
      if (entry.headId <= this.#last) throw new Error(`the hub introduced head ${entry.headId} after head ${this.#last} (ids must increase)`);
      this.#last = entry.headId;
      this.#heads.set(entry.headId, { head: entry.head, parsed: parseHead(entry.head) });
      if (this.#heads.size > HEADS_KEPT) this.#heads.delete(this.#heads.keys().next().value!);
    }
    const known = this.#heads.get(entry.headId);
    if (known === undefined) {
      throw new Error(`the hub referred to head ${entry.headId}, which is not among the ${HEADS_KEPT} most recently introduced on this stream`);
    }
    if (!entry.headDigestSignature) return { head: known.head, parsed: known.parsed, tail: entry.tail };
    return { head: known.head, parsed: known.parsed, tail: entry.tail, headDigest: (known.digest ??= headDigest(known.head)) };
  }
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
  private readonly processor: FanoutProcessor;

  private readonly headsByReference: boolean;
  private readonly headDigests: boolean;

  constructor(private readonly options: GuestConsumerOptions) {
    this.processor = new FanoutProcessor(options);
    this.headsByReference = options.headsByReference ?? true;
    this.headDigests = this.headsByReference && (options.headDigestSignatures ?? true);
  }

  /** The recipient checks' counters (hits, misses, recipients verified). */
  get recipientStats(): Readonly<RecipientCheckStats> {
    return this.processor.checks.stats;
  }

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
    const max = this.options.backoff?.maxMs ?? 10_000;
    const stop = this.stopper.signal;
    const st = this.state.get(peer.domain)!;
    let delay = initial;
    while (!stop.aborted) {
      const attemptStarted = Date.now();
      const transport = createPeerTransport(peer, this.options.tls, this.options.transport);
      const call = new AbortController();
      const signal = AbortSignal.any([stop, call.signal]);
      let acks: AckPipeline | undefined;
      try {
        const client = createClient(FanoutService, transport);
        st.processed ??= await processedHighWater(store, fanoutSource(peer.domain));
        acks = new AckPipeline(client, signal, () => call.abort());
        const stream = client.subscribe({ resumeAfter: st.processed, headsByReference: this.headsByReference, headDigestSignatures: this.headDigests }, { signal });
        const onEntry = (): void => {
          if (!st.connected) logger?.info({ hub: peer.domain, resumeAfter: st.processed!.toString() }, "subscribed to hub");
          st.connected = true;
          delete st.lastError;
          delay = initial;
        };
        const completed = await this.pipeline(peer.domain, stream, signal, onEntry, (sequence, response) => {
          st.processed = sequence;
          acks!.push(sequence, response);
        });
        await acks.flush();
        if (completed && !stop.aborted) throw new Error("the hub ended the stream");
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
      // A stream that was open for a while (connect-node says nothing before the first entry) was connected.
      if (Date.now() - attemptStarted >= 2_000) delay = initial;
      await sleep(delay, stop);
      delay = Math.min(delay * 2, max);
    }
  }

  /**
   * One subscription: reads ahead up to `inFlight` entries, prepares them
   * concurrently, writes them in stream order in batches and reports each
   * outcome in order (`done`). Returns true when the stream ended, false when
   * it was stopped (signal, or a rate limit wait cut short).
   */
  private async pipeline(
    hub: string,
    stream: AsyncIterable<StreamEntry>,
    signal: AbortSignal,
    onEntry: () => void,
    done: (sequence: bigint, response: DSFanoutResponse) => void,
  ): Promise<boolean> {
    const width = Math.max(1, this.options.inFlight ?? 32);
    const batchMax = Math.max(1, this.options.batch ?? 64);
    const st = this.state.get(hub)!;
    interface Slot {
      readonly sequence: bigint;
      readonly prepared: Promise<Prepared>;
      result?: Prepared;
    }
    const slots: Slot[] = [];
    let ended = false;
    let readError: unknown;
    // The reader waits for room, the writer for entries: anything that changes either wakes both.
    let waiters: (() => void)[] = [];
    const poke = (): void => {
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    };
    const nextEvent = (): Promise<void> => new Promise((r) => waiters.push(r));
    signal.addEventListener("abort", poke, { once: true });

    const heads = new HeadsReceived(this.headDigests);
    const reader = (async () => {
      try {
        for await (const entry of stream) {
          onEntry();
          const input = heads.input(entry);
          // Already processed (a resume after an unacknowledged batch): acknowledged again, not redone.
          if (entry.sequence <= (st.processed ?? 0n) && slots.length === 0) {
            done(entry.sequence, okResponse);
            continue;
          }
          const slot: Slot = { sequence: entry.sequence, prepared: this.processor.prepare(hub, entry.sequence, input) };
          slot.prepared.then((p) => ((slot.result = p), poke()), poke);
          slots.push(slot);
          poke();
          while (slots.length >= width && !signal.aborted) await nextEvent();
          if (signal.aborted) break;
        }
      } catch (err) {
        readError = err;
      } finally {
        ended = true;
        poke();
      }
    })();

    try {
      for (;;) {
        while (slots.length === 0 && !ended) await nextEvent();
        if (slots.length === 0) {
          if (readError !== undefined && !signal.aborted) throw readError;
          return !signal.aborted;
        }
        // The first in line, and every later one already prepared, up to a batch.
        const first = await slots[0]!.prepared;
        let n = 1;
        while (n < slots.length && n < batchMax && slots[n]!.result !== undefined) n++;
        let items = [first, ...slots.slice(1, n).map((x) => x.result!)];
        for (;;) {
          const r = await this.processor.write(hub, items);
          r.outcomes.forEach((o, i) => done(items[i]!.sequence, o.response));
          slots.splice(0, r.outcomes.length);
          poke();
          if (r.retryAt === undefined) break;
          // Rate limited: hold the stream (the hub keeps the entries) until the window ends.
          items = items.slice(r.outcomes.length);
          await sleep(r.retryAt - (this.options.now?.() ?? Date.now()), signal);
          if (signal.aborted) return false;
        }
      }
    } finally {
      // The reader ends with the call, which the caller aborts on the way out (and that wakes it).
      poke();
      if (signal.aborted || ended) await reader;
    }
  }
}
