// mimi.ds.v1.AdminService: the operator's handle on DS-initiated proposals
// (the work is src/ds/admin.ts) and on this DS's own clients' tokens and
// blocks (src/delivery/client-admin.ts). Only a mutual-TLS caller whose
// certificate names this DS's own domain, issued by the CA configured for
// that domain (serve --tls-ca), may use it.
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { proposeAddition, proposeRemoval, verifyGroup } from "../ds/admin.js";
import type { DSContext } from "../ds/context.js";
import { toDSFailure } from "../ds/errors.js";
import { DSErrorDetailSchema } from "../../gen/mimi/ds/v1/hub_pb.js";
import { decodeMLSMessage, dsErrorResponse, encodeDSResponse } from "../wire/index.js";
import { requestContext } from "./context.js";
import { statusForDsError } from "./errors.js";
import { serviceRoute, type ServiceRoute } from "./server.js";

function requireOperator(ctx: HandlerContext, domain: string): void {
  const peer = requestContext(ctx).peerDomain;
  if (peer === undefined) throw new ConnectError("AdminService needs a client certificate for this DS's domain", Code.Unauthenticated);
  if (peer !== domain) throw new ConnectError(`a certificate for ${peer} may not administer ${domain}`, Code.PermissionDenied);
}

async function asConnect<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    if (err instanceof ConnectError) throw err;
    const d = toDSFailure(err);
    // The DS's own error travels as in HubService.Submit: status plus DSErrorDetail.
    throw new ConnectError(d.message, statusForDsError(d.code), undefined, [
      { desc: DSErrorDetailSchema, value: { dsResponse: encodeDSResponse(dsErrorResponse(d.code, d.message, d.currentEpoch)) } },
    ]);
  }
}

/** What AdminService does for the DS's own clients (implemented by the delivery layer). */
export interface ClientAdmin {
  revokeFanoutTokens(clientId: string, graceMs: number): Promise<{ readonly tokensNotBefore: number; readonly graceUntil: number }>;
  updateBlocks(
    clientId: string,
    change: {
      readonly blockDomains?: readonly string[];
      readonly unblockDomains?: readonly string[];
      readonly blockGroups?: readonly Uint8Array[];
      readonly unblockGroups?: readonly Uint8Array[];
    },
  ): Promise<{ readonly blockedDomains: readonly string[]; readonly blockedGroups: readonly Uint8Array[] }>;
}

const unimplemented = (): never => {
  throw new ConnectError("this DS does not manage local clients here", Code.Unimplemented);
};

export function adminRoute(ds: DSContext, clients?: ClientAdmin): ServiceRoute {
  return serviceRoute(AdminService, {
    async proposeRemoval(req, ctx) {
      requireOperator(ctx, ds.config.domain);
      return { proposalRef: await asConnect(() => proposeRemoval(ds, req.groupId, req.clientId)) };
    },
    async proposeAddition(req, ctx) {
      requireOperator(ctx, ds.config.domain);
      return asConnect(async () => {
        const m = decodeMLSMessage(req.keyPackage);
        if (m.wireformat !== "mls_key_package") throw new ConnectError("key_package must be an MLSMessage of wire format mls_key_package", Code.InvalidArgument);
        return { proposalRef: await proposeAddition(ds, req.groupId, m.keyPackage) };
      });
    },
    async verifyGroup(req, ctx) {
      requireOperator(ctx, ds.config.domain);
      const v = await asConnect(() => verifyGroup(ds, req.groupId));
      return {
        epoch: v.epoch,
        liveStateSha256: v.liveStateSha256 ?? new Uint8Array(),
        rebuiltStateSha256: v.rebuiltStateSha256,
        history: v.history.map((h) => ({ epoch: h.epoch, groupContextSha256: h.groupContextSha256, ratchetTreeSha256: h.ratchetTreeSha256 })),
      };
    },
    async revokeFanoutTokens(req, ctx) {
      requireOperator(ctx, ds.config.domain);
      if (clients === undefined) return unimplemented();
      if (req.gracePeriodMs > BigInt(Number.MAX_SAFE_INTEGER)) throw new ConnectError("grace_period_ms is too large", Code.InvalidArgument);
      const r = await clients.revokeFanoutTokens(req.clientId, Number(req.gracePeriodMs));
      return { tokensNotBeforeMs: BigInt(r.tokensNotBefore), graceUntilMs: BigInt(r.graceUntil) };
    },
    async updateBlocks(req, ctx) {
      requireOperator(ctx, ds.config.domain);
      if (clients === undefined) return unimplemented();
      const r = await clients.updateBlocks(req.clientId, {
        blockDomains: req.blockDomains,
        unblockDomains: req.unblockDomains,
        blockGroups: req.blockGroups,
        unblockGroups: req.unblockGroups,
      });
      return { blockedDomains: [...r.blockedDomains], blockedGroups: [...r.blockedGroups] };
    },
  });
}
