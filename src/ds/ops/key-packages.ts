// Fetch KeyPackages (draft 9.9): one KeyPackage per requested client and
// ciphersuite (any suite when none is named), consumed atomically so no
// package is handed out twice — except a client's last-resort package.
import { DS_PROTOCOL_VERSION, DSErrorCode, decodeKeyPackageBytes } from "../../wire/index.js";
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
  const ops: ConsumeKeyPackageOp[] = [];
  for (const id of ids) {
    if (domainOf(id) !== ctx.config.domain) failWith(DSErrorCode.unknown_client, `key_packages: ${id} is not a client of ${ctx.config.domain}`);
    if ((await ctx.store.getClient(id)) === undefined) failWith(DSErrorCode.unknown_client, `key_packages: ${id} is not registered here`);
    const suites = req.cipherSuites.length > 0 ? req.cipherSuites : [undefined];
    for (const ciphersuite of suites) ops.push({ kind: "consumeKeyPackage", clientId: id, ...(ciphersuite !== undefined ? { ciphersuite } : {}) });
  }
  const applied = await ctx.store.apply({ ops });
  const missing = applied.keyPackages.findIndex((k) => k === undefined);
  if (missing >= 0) failWith(DSErrorCode.no_key_packages, `key_packages: ${ops[missing]!.clientId} has no KeyPackage${ops[missing]!.ciphersuite !== undefined ? ` for ciphersuite ${ops[missing]!.ciphersuite}` : ""} left`);
  const keyPackages = applied.keyPackages.map((k) => decodeKeyPackageBytes(k!.keyPackage));
  return { response: { protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "key_packages", keyPackages } }, writes: [], fanout: [] };
};
