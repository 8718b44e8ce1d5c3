// Fetch KeyPackages (draft 9.9): one KeyPackage per requested client and
// ciphersuite (any suite when none is named), consumed atomically so no
// package is handed out twice — except a client's last-resort package.
// Packages of another domain's clients come from that domain's DS.
//
// Who may ask (9.9: "the DS SHOULD verify that the sender of the request is
// authorized"; docs/security.md):
// - a client registered here, with a registered_client signature (used once);
// - a peer DS over mutual TLS, for clients of this domain (its own clients
//   asked it, and it answers for them);
// - anyone, only when policy.keyPackages.allowAnonymous is set.
// Each requester is rate-limited (per client, per peer, per address), and so
// is each client whose packages are handed out, whoever asks. A client that
// is not registered answers like one without packages (no_key_packages), so
// the answer does not tell registered identifiers from others.
import type { KeyPackage } from "ts-mls";
import { DS_PROTOCOL_VERSION, DSErrorCode, decodeKeyPackageBytes, encodeDSRequest, type DSErrorCodeValue } from "../../wire/index.js";
import { shown } from "../admission.js";
import { authenticateRegisteredClient } from "../auth.js";
import type { DSContext } from "../context.js";
import { askPeer } from "../peers.js";
import { DSFailure } from "../errors.js";
import { domainOf } from "../../mls/index.js";
import type { ConsumeKeyPackageOp } from "../../store/port.js";
import type { RateRule } from "../rate-limit.js";
import { failWith } from "../errors.js";
import { bodyOf } from "./common.js";
import type { Operation, OperationInput } from "./index.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Who is asking, as far as this DS can tell. */
type Requester = { readonly kind: "client"; readonly clientId: string } | { readonly kind: "peer"; readonly domain: string } | { readonly kind: "anonymous"; readonly address: string };

export const keyPackages: Operation = async (ctx, input) => {
  const { keyPackagesRequest: req } = bodyOf(input, "key_packages");
  if (req.clientIdentifiers.length === 0) failWith(DSErrorCode.invalid_request, "key_packages: no client identifiers");
  const ids = req.clientIdentifiers.map((b) => {
    try {
      return utf8.decode(b);
    } catch {
      return failWith(DSErrorCode.invalid_request, "key_packages: a client identifier is not UTF-8");
    }
  });
  const requester = await authorize(ctx, input);
  // Clients of other domains are asked for at their own DS (Section 9.9), one request per domain.
  const byDomain = new Map<string, string[]>();
  for (const id of ids) {
    const d = domainOf(id);
    if (d === undefined) failWith(DSErrorCode.unknown_client, `key_packages: ${shown(id)} names no domain`);
    if (d !== ctx.config.domain && requester.kind === "peer")
      failWith(DSErrorCode.invalid_request, `key_packages: a peer DS asks ${ctx.config.domain} only for its clients, not for ${shown(id)}`);
    if (d !== ctx.config.domain && (ctx.peers === undefined || !ctx.peers.has(d)))
      failWith(DSErrorCode.unknown_client, `key_packages: ${shown(id)} is a client of ${d}, which is not a peer of ${ctx.config.domain}`);
    byDomain.set(d, [...(byDomain.get(d) ?? []), id]);
  }
  const perTarget = Math.max(1, req.cipherSuites.length);
  await limitRequester(ctx, requester, ids.length * perTarget);
  for (const id of byDomain.get(ctx.config.domain) ?? []) await limit(ctx, `key_packages:target:${id}`, ctx.config.policy.keyPackages.perTarget, perTarget, `KeyPackages of ${shown(id)}`);

  const found = new Map<string, KeyPackage[]>();
  await Promise.all(
    [...byDomain].map(async ([domain, clients]) => {
      const kps = domain === ctx.config.domain ? await consumeLocal(ctx, clients, req.cipherSuites) : await fetchRemote(ctx, domain, clients, req.cipherSuites);
      found.set(domain, [...kps]);
    }),
  );
  // Answer in the order asked.
  const keyPackages = ids.flatMap((id) => {
    const list = found.get(domainOf(id)!)!;
    return list.splice(0, req.cipherSuites.length > 0 ? req.cipherSuites.length : 1);
  });
  return { response: { protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "key_packages", keyPackages } }, writes: [], fanout: [] };
};

/** The requester, authenticated (a registered_client signature is spent here: a replay of it is refused). */
async function authorize(ctx: DSContext, input: OperationInput): Promise<Requester> {
  const auth = input.request.authenticationData;
  const peer = input.context.peerDomain;
  if (auth.authType === "registered_client") {
    const client = await authenticateRegisteredClient(ctx, input.request, input.raw);
    const applied = await ctx.store.apply({ ops: [client.acceptOnce] });
    if (applied.duplicate) failWith(DSErrorCode.authentication_failed, "key_packages: this signed request was accepted before; sign each request anew");
    return { kind: "client", clientId: client.clientId };
  }
  // A peer's certificate was verified against the CA configured for its domain (src/server/context.ts).
  if (peer !== undefined && (peer === ctx.config.domain || ctx.peers?.has(peer) === true)) return { kind: "peer", domain: peer };
  if (auth.authType === "anonymous" && ctx.config.policy.keyPackages.allowAnonymous) return { kind: "anonymous", address: input.context.remoteAddress ?? "unknown" };
  return failWith(
    DSErrorCode.authentication_failed,
    `key_packages needs a registered_client signature of a client of ${ctx.config.domain}, or a peer DS's mutual TLS (draft 9.9)`,
  );
}

function limitRequester(ctx: DSContext, r: Requester, cost: number): Promise<void> {
  const p = ctx.config.policy.keyPackages;
  switch (r.kind) {
    case "client":
      return limit(ctx, `key_packages:client:${r.clientId}`, p.perRequester, cost, "KeyPackage fetches of this client");
    case "peer":
      return limit(ctx, `key_packages:peer:${r.domain}`, p.perPeer, cost, `KeyPackage fetches of ${r.domain}`);
    case "anonymous":
      return limit(ctx, `key_packages:address:${r.address}`, p.perRequester, cost, "anonymous KeyPackage fetches from this address");
  }
}

/** Count `cost` against a store-kept window (shared by every instance of the domain); rate_limited when full. */
async function limit(ctx: DSContext, key: string, rule: RateRule, cost: number, what: string): Promise<void> {
  const r = await ctx.store.rateLimit(key, { limit: rule.limit, windowMs: rule.windowMs, cost }, ctx.config.now());
  if (!r.allowed) failWith(DSErrorCode.rate_limited, `key_packages: ${what} reached ${rule.limit} per ${rule.windowMs / 1000} s; retry in ${Math.max(0, r.resetAt - ctx.config.now())} ms`);
}

async function consumeLocal(ctx: DSContext, ids: readonly string[], cipherSuites: readonly number[]): Promise<KeyPackage[]> {
  const ops: ConsumeKeyPackageOp[] = [];
  for (const id of ids) {
    // Not looked up first: an unregistered client has no packages, and answers as such.
    const suites = cipherSuites.length > 0 ? cipherSuites : [undefined];
    for (const ciphersuite of suites) ops.push({ kind: "consumeKeyPackage", clientId: id, ...(ciphersuite !== undefined ? { ciphersuite } : {}) });
  }
  const applied = await ctx.store.apply({ ops });
  const missing = applied.keyPackages.findIndex((k) => k === undefined);
  if (missing >= 0)
    failWith(DSErrorCode.no_key_packages, `key_packages: no KeyPackage of ${shown(ops[missing]!.clientId)}${ops[missing]!.ciphersuite !== undefined ? ` for ciphersuite ${ops[missing]!.ciphersuite}` : ""} is available`);
  return applied.keyPackages.map((k) => decodeKeyPackageBytes(k!.keyPackage));
}

async function fetchRemote(ctx: DSContext, domain: string, ids: readonly string[], cipherSuites: readonly number[]): Promise<readonly KeyPackage[]> {
  // Anonymous at the DSAuthData level: the peer authorizes this DS by its mutual TLS.
  const request = encodeDSRequest({
    version: DS_PROTOCOL_VERSION,
    requestBody: { requestType: "key_packages", keyPackagesRequest: { clientIdentifiers: ids.map((id) => new TextEncoder().encode(id)), cipherSuites } },
    authenticationData: { authType: "anonymous" },
  });
  const body = (await askPeer(ctx.peers!, domain, request)).responseBody;
  if (body.responseType === "error") throw new DSFailure(body.error.code as DSErrorCodeValue, `${domain}: ${body.error.message}`);
  if (body.responseType !== "key_packages") failWith(DSErrorCode.unavailable, `${domain} answered key_packages with ${body.responseType}`);
  return body.keyPackages;
}
