// Fetch KeyPackages (draft 9.9): one KeyPackage per requested client and
// ciphersuite (any suite when none is named), consumed atomically so no
// package is handed out twice — except a client's last-resort package.
// Packages of another domain's clients come from that domain's DS.
import type { KeyPackage } from "ts-mls";
import { DS_PROTOCOL_VERSION, DSErrorCode, decodeKeyPackageBytes, encodeDSRequest, type DSErrorCodeValue } from "../../wire/index.js";
import type { DSContext } from "../context.js";
import { askPeer } from "../peers.js";
import { DSFailure } from "../errors.js";
import { domainOf } from "../../mls/index.js";
import type { ConsumeKeyPackageOp } from "../../store/port.js";
import { failWith } from "../errors.js";
import { bodyOf } from "./common.js";
import type { Operation } from "./index.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });

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
  // Clients of other domains are asked for at their own DS (Section 9.9), one request per domain.
  const byDomain = new Map<string, string[]>();
  for (const id of ids) {
    const d = domainOf(id);
    if (d === undefined) failWith(DSErrorCode.unknown_client, `key_packages: ${id} names no domain`);
    if (d !== ctx.config.domain && (ctx.peers === undefined || !ctx.peers.has(d)))
      failWith(DSErrorCode.unknown_client, `key_packages: ${id} is a client of ${d}, which is not a peer of ${ctx.config.domain}`);
    byDomain.set(d, [...(byDomain.get(d) ?? []), id]);
  }
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

async function consumeLocal(ctx: DSContext, ids: readonly string[], cipherSuites: readonly number[]): Promise<KeyPackage[]> {
  const ops: ConsumeKeyPackageOp[] = [];
  for (const id of ids) {
    if ((await ctx.store.getClient(id)) === undefined) failWith(DSErrorCode.unknown_client, `key_packages: ${id} is not registered here`);
    const suites = cipherSuites.length > 0 ? cipherSuites : [undefined];
    for (const ciphersuite of suites) ops.push({ kind: "consumeKeyPackage", clientId: id, ...(ciphersuite !== undefined ? { ciphersuite } : {}) });
  }
  const applied = await ctx.store.apply({ ops });
  const missing = applied.keyPackages.findIndex((k) => k === undefined);
  if (missing >= 0) failWith(DSErrorCode.no_key_packages, `key_packages: ${ops[missing]!.clientId} has no KeyPackage${ops[missing]!.ciphersuite !== undefined ? ` for ciphersuite ${ops[missing]!.ciphersuite}` : ""} left`);
  return applied.keyPackages.map((k) => decodeKeyPackageBytes(k!.keyPackage));
}

async function fetchRemote(ctx: DSContext, domain: string, ids: readonly string[], cipherSuites: readonly number[]): Promise<readonly KeyPackage[]> {
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
