// Fanout planning (draft Section 6.2): every message an accepted request
// causes becomes queue appends in the same store transaction. A message to the
// group is one entry in the group's feed for all its local members (each pulls
// it into its own queue when it reads) and one signed DSFanoutRequest in the
// outbox of every other domain, however many of its clients are in the group:
// the hub's work per message grows with the number of domains, not members.
// Explicitly named recipients (Welcomes) get an entry in their own queue.
import type { WriteOp } from "../store/port.js";
import { clientQueue, groupFeed, outboxQueue } from "../store/port.js";
import {
  DS_PROTOCOL_VERSION,
  dsFanoutRequestHeadFields,
  encodeWith,
  opaqueV,
  SignatureLabel,
  struct,
  type FanoutAuthToken,
} from "../wire/index.js";
import { FANOUT_SIGNATURE_SUITE, type HubIdentity } from "./hub-identity.js";
import type { HostedGroup } from "./groups.js";
import { domainOf } from "../mls/index.js";

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

/** A signed DSFanoutRequest (docs/protocol.md) for one destination domain. */
export async function signedFanoutRequest(hub: HubIdentity, recipients: readonly Recipient[], message: Uint8Array): Promise<Uint8Array> {
  const head = encodeWith(fanoutHeadCodec, {
    protocolVersion: DS_PROTOCOL_VERSION,
    hubDomain: hub.domain,
    recipientIds: recipients.map((r) => utf8.encode(r.clientId)),
    fanoutAuthTokens: recipients.map((r) => ({ token: r.token ?? new Uint8Array() })),
  });
  const tbs = new Uint8Array(head.length + message.length);
  tbs.set(head);
  tbs.set(message, head.length);
  const signature = await hub.sign(FANOUT_SIGNATURE_SUITE, SignatureLabel.DSFanoutRequest, tbs);
  const sig = encodeWith(opaqueV, signature);
  const out = new Uint8Array(tbs.length + sig.length);
  out.set(tbs);
  out.set(sig, tbs.length);
  return out;
}

/** The queue appends for a request's fanout, grouped by destination. */
export async function planFanout(hub: HubIdentity, items: readonly FanoutItem[]): Promise<WriteOp[]> {
  const ops: WriteOp[] = [];
  for (const item of items) {
    const byDomain = new Map<string, Recipient[]>();
    if ("group" in item) {
      for (const [domain, m] of item.group.byDomain(hub.domain)) {
        if (domain === hub.domain) {
          const except = m.leafIndices.flatMap((leaf, i) => (item.exceptLeaves.has(leaf) ? [m.clientIds[i]!] : []));
          if (except.length < m.clientIds.length) ops.push({ kind: "append", queue: groupFeed(item.group.key), payload: item.message, except });
          continue;
        }
        const list: Recipient[] = [];
        for (let i = 0; i < m.clientIds.length; i++) {
          if (item.exceptLeaves.has(m.leafIndices[i]!)) continue;
          const clientId = m.clientIds[i]!;
          const token = item.group.tokens.get(clientId);
          list.push(token !== undefined ? { clientId, token } : { clientId });
        }
        if (list.length > 0) byDomain.set(domain, list);
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
