// mimi.ds.v1.AdminService: the operator's handle on DS-initiated proposals.
// Only a mutual-TLS caller whose certificate names this DS's own domain may
// use it; the work is src/ds/admin.ts.
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { AdminService } from "../../gen/mimi/ds/v1/admin_pb.js";
import { proposeAddition, proposeRemoval, verifyGroup } from "../ds/admin.js";
import type { DSContext } from "../ds/context.js";
import { toDSFailure } from "../ds/errors.js";
import { decodeMLSMessage } from "../wire/index.js";
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
    throw new ConnectError(d.message, statusForDsError(d.code));
  }
}

export function adminRoute(ds: DSContext): ServiceRoute {
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
  });
}
