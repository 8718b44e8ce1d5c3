// Fanout planning (draft Section 6.2): every message an accepted request
// causes becomes queue appends in the same store transaction. A message to the
// group is one entry in the group's feed for all its local members (each pulls
// it into its own queue when it reads) and one signed DSFanoutRequest in the
// outbox of every other domain, however many of its clients are in the group:
// the hub's work per message grows with the number of domains, not members.
// Explicitly named recipients (Welcomes) get an entry in their own queue.
//
// The recipient section of a group message's DSFanoutRequest (every
// recipient of one domain with its FanoutAuthToken: about 100 bytes per
// recipient) is the same for every message of an epoch. It is encoded once
// per (group state, domain, excluded recipients of that domain) and stored
// once as the outbox entries' shared prefix (AppendOp.prefix), so an outbox
// entry holds the message alone: its size does not grow with the members.
// Such an entry is signed when it is streamed (streamedTail), in the form the
// guest asked for: over the whole request (-05), or over the head's digest
// (docs/federation.md "Heads by reference"), which keeps the signature's cost
// flat in the members.
import { createHash } from "node:crypto";
import type { QueueEntry, WriteOp } from "../store/port.js";
import { clientQueue, groupFeed, outboxQueue } from "../store/port.js";
import {
  Decoder,
  DS_PROTOCOL_VERSION,
  dsFanoutRequestHeadFields,
  encodeWith,
  mlsMessageCodec,
  opaqueV,
  SignatureLabel,
  struct,
  WireDecodeError,
  type FanoutAuthToken,
} from "../wire/index.js";
import type { HubIdentity } from "./hub-identity.js";
import type { HostedGroup } from "./groups.js";
import { concat, domainOf, memberAt } from "../mls/index.js";

/** A recipient named explicitly (Welcome routing, removed members). */
export interface Recipient {
  readonly clientId: string;
  readonly token?: Uint8Array;
}

export type FanoutItem =
  /** Every member of `group` (the state before the request) except some leaves. */
  | { readonly message: Uint8Array; readonly group: HostedGroup; readonly exceptLeaves: ReadonlySet<number> }
  | { readonly message: Uint8Array; readonly recipients: readonly Recipient[] };

interface FanoutHead {
  readonly protocolVersion: number;
  readonly hubDomain: string;
  readonly recipientIds: readonly Uint8Array[];
  readonly fanoutAuthTokens: readonly FanoutAuthToken[];
}
// The message bytes follow the head as received: the hub never re-encodes what it forwards.
const fanoutHeadCodec = struct<FanoutHead>(dsFanoutRequestHeadFields);

const utf8 = new TextEncoder();

/** The DSFanoutRequest fields before mls_message, for one destination domain's recipients. */
export function fanoutHead(hub: HubIdentity, recipients: readonly Recipient[]): Uint8Array {
  return encodeWith(fanoutHeadCodec, {
    protocolVersion: DS_PROTOCOL_VERSION,
    hubDomain: hub.domain,
    recipientIds: recipients.map((r) => utf8.encode(r.clientId)),
    fanoutAuthTokens: recipients.map((r) => ({ token: r.token ?? new Uint8Array() })),
  });
}

/**
 * What follows the head in a signed DSFanoutRequest: the message and
 * `signature<V>`, over head || message (label "DSFanoutRequest"), or with
 * `headDigest` over FanoutHeadDigestTBS (label "DSFanoutRequestHeadDigest").
 */
export async function signedTail(hub: HubIdentity, head: Uint8Array, message: Uint8Array, headDigest?: Uint8Array): Promise<Uint8Array> {
  const signature =
    headDigest === undefined
      ? await hub.signFanout([head, message])
      : await hub.signFanout(headDigestTbs(headDigest, message), SignatureLabel.DSFanoutRequestHeadDigest);
  return concat(message, encodeWith(opaqueV, signature));
}

/** SHA-256 of a DSFanoutRequest head: what a head-digest signature covers in its place. */
export const headDigest = (head: Uint8Array): Uint8Array => createHash("sha256").update(head).digest();

/** `struct { opaque head_digest<V>; MLSMessage mls_message; } FanoutHeadDigestTBS`, in parts. */
export const headDigestTbs = (digest: Uint8Array, message: Uint8Array): Uint8Array[] => [encodeWith(opaqueV, digest), message];

/**
 * How an outbox entry with a stored head goes out: `own` is what the entry
 * holds after the head. Entries appended since heads are signed when streamed
 * hold the MLSMessage alone and are signed now, whole or (with `digest`) over
 * the head's digest; entries appended before hold `mls_message ||
 * signature<V>` (a whole-request signature) and go out as stored. The two
 * are told apart by what follows the MLSMessage, which delimits itself.
 */
export async function streamedTail(
  hub: HubIdentity,
  head: Uint8Array,
  own: Uint8Array,
  digest: (() => Uint8Array) | undefined,
): Promise<{ readonly tail: Uint8Array; readonly headDigestSigned: boolean; readonly asStored: boolean }> {
  const d = new Decoder(own, "outbox entry");
  try {
    d.field("mls_message", mlsMessageCodec);
  } catch (err) {
    // Not an MLSMessage (a damaged entry): sent as stored, for the guest to refuse, so it cannot hold up the stream.
    if (err instanceof WireDecodeError) return { tail: own, headDigestSigned: false, asStored: true };
    throw err;
  }
  if (d.remaining > 0) return { tail: own, headDigestSigned: false, asStored: true };
  const headDigest = digest?.();
  return { tail: await signedTail(hub, head, own, headDigest), headDigestSigned: headDigest !== undefined, asStored: false };
}

/** A signed DSFanoutRequest (docs/protocol.md) for one destination domain. */
export async function signedFanoutRequest(hub: HubIdentity, recipients: readonly Recipient[], message: Uint8Array): Promise<Uint8Array> {
  const head = fanoutHead(hub, recipients);
  return concat(head, await signedTail(hub, head, message));
}

/** The whole signed DSFanoutRequest an outbox entry stands for (what a guest gets without heads by reference). */
export async function wholeRequest(hub: HubIdentity, entry: QueueEntry): Promise<Uint8Array> {
  if (entry.prefix === undefined) return entry.payload;
  const { bytes: head, rest } = entry.prefix;
  const out = await streamedTail(hub, head, rest, undefined);
  return out.asStored ? entry.payload : concat(head, out.tail);
}

/** A domain's recipient section of one group state: the encoded head and the digest that names it in the store. */
interface Section {
  readonly head: Uint8Array;
  readonly ref: string;
}

/** Sections of a group state, by "<domain> <excluded leaves of that domain>"; at most this many per state. */
const SECTIONS_PER_STATE = 16;
const sectionCache = new WeakMap<HostedGroup, Map<string, Section>>();

function sectionFor(hub: HubIdentity, group: HostedGroup, domain: string, except: readonly number[], build: () => Recipient[]): Section {
  let byKey = sectionCache.get(group);
  if (byKey === undefined) sectionCache.set(group, (byKey = new Map()));
  const key = `${domain} ${except.join(",")}`;
  let section = byKey.get(key);
  if (section === undefined) {
    const head = fanoutHead(hub, build());
    section = { head, ref: createHash("sha256").update(head).digest("base64url") };
    if (byKey.size >= SECTIONS_PER_STATE) byKey.delete(byKey.keys().next().value!);
    byKey.set(key, section);
  }
  return section;
}

/** The queue appends for a request's fanout, grouped by destination. */
export async function planFanout(hub: HubIdentity, items: readonly FanoutItem[]): Promise<WriteOp[]> {
  const ops: WriteOp[] = [];
  for (const item of items) {
    const byDomain = new Map<string, Recipient[]>();
    if ("group" in item) {
      const group = item.group;
      // The excluded leaves (the sender) by domain: few, so looked up one by one
      // (a scan of the members would cost O(members) per message).
      const exceptIn = new Map<string, number[]>();
      const exceptIds = new Map<string, string[]>();
      for (const leaf of item.exceptLeaves) {
        const m = memberAt(group.state, leaf);
        if (m === undefined) continue;
        const d = m.domain ?? hub.domain;
        exceptIn.set(d, [...(exceptIn.get(d) ?? []), leaf].sort((a, b) => a - b));
        exceptIds.set(d, [...(exceptIds.get(d) ?? []), m.clientId]);
      }
      // The hub's own members: one feed entry (only their number matters here).
      const locals = group.domainCounts(hub.domain).get(hub.domain) ?? 0;
      const exceptLocal = exceptIds.get(hub.domain) ?? [];
      if (exceptLocal.length < locals) ops.push({ kind: "append", queue: groupFeed(group.key), payload: item.message, except: exceptLocal });
      for (const [domain, m] of group.remoteDomains(hub.domain)) {
        const excluded = exceptIn.get(domain) ?? [];
        if (excluded.length >= m.clientIds.length) continue; // nobody of that domain receives it
        const section = sectionFor(hub, group, domain, excluded, () => {
          const list: Recipient[] = [];
          for (let i = 0; i < m.clientIds.length; i++) {
            if (item.exceptLeaves.has(m.leafIndices[i]!)) continue;
            const clientId = m.clientIds[i]!;
            const token = group.tokens.get(clientId);
            list.push(token !== undefined ? { clientId, token } : { clientId });
          }
          return list;
        });
        ops.push({
          kind: "append",
          queue: outboxQueue(domain),
          payload: item.message,
          prefix: { groupId: group.key, epoch: group.epoch, ref: section.ref, bytes: section.head },
        });
      }
    } else {
      for (const r of item.recipients) {
        const d = domainOf(r.clientId) ?? hub.domain;
        let list = byDomain.get(d);
        if (list === undefined) byDomain.set(d, (list = []));
        list.push(r);
      }
    }
    for (const [domain, recipients] of byDomain) {
      if (domain === hub.domain) {
        for (const r of recipients) ops.push({ kind: "append", queue: clientQueue(r.clientId), payload: item.message });
      } else {
        ops.push({ kind: "append", queue: outboxQueue(domain), payload: await signedFanoutRequest(hub, recipients, item.message) });
      }
    }
  }
  return ops;
}

/** Whether a client identifier names a client of this hub's domain (ids without a domain do). */
export const isLocalClient = (hub: HubIdentity, clientId: string): boolean => (domainOf(clientId) ?? hub.domain) === hub.domain;

/**
 * Feed membership changes of a commit, applied after its fanout: joiners start
 * after the commit that added them, removed members still get it. A client
 * both removed and added (resync) stays.
 */
export function feedChanges(hub: HubIdentity, groupId: string, added: readonly string[], removed: readonly string[]): WriteOp[] {
  const joined = new Set(added.filter((c) => isLocalClient(hub, c)));
  const left = removed.filter((c) => isLocalClient(hub, c) && !joined.delete(c));
  return [
    ...left.map((clientId): WriteOp => ({ kind: "leaveFeed", groupId, clientId })),
    ...[...joined].map((clientId): WriteOp => ({ kind: "joinFeed", groupId, clientId })),
  ];
}
