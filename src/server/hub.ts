// mimi.ds.v1.HubService: the envelope around DSRequest/DSResponse bytes. The
// transport never reads the DS protocol; it only maps a DS error to a status.
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { DSErrorDetailSchema, HubService } from "../../gen/mimi/ds/v1/hub_pb.js";
import type { DSRequestHandler, HubInfoSource } from "../ds/handler.js";
import { requestContext } from "./context.js";
import { statusForDsError } from "./errors.js";
import { dsErrorCodeName } from "../wire/errors.js";
import { defaultMaxRequestBytes, tooLarge } from "./limits.js";

export interface HubDeps {
  readonly domain: string;
  readonly handler: DSRequestHandler;
  /** Answers HubInfo; without it HubInfo is Unimplemented. */
  readonly hubInfo?: HubInfoSource;
  /** Largest DSRequest accepted (bytes); larger ones get too_large. Default defaultMaxRequestBytes. */
  readonly maxRequestBytes?: number;
  /** This build's version, in HubInfo. */
  readonly version?: string;
  /** Called with unexpected handler failures (which clients see only as Internal). */
  readonly onInternalError: (err: unknown, ctx: HandlerContext, fields?: { readonly groupId?: string; readonly dsError?: string }) => void;
}

export function registerHub(router: ConnectRouter, deps: HubDeps): void {
  const maxRequestBytes = deps.maxRequestBytes ?? defaultMaxRequestBytes;
  router.service(HubService, {
    async submit(req, ctx) {
      // The exact limit; the transport's guard only bounds the encoded message.
      if (req.dsRequest.length > maxRequestBytes) throw tooLarge(`${req.dsRequest.length} bytes`, maxRequestBytes);
      let handled;
      try {
        handled = await deps.handler.handle(req.dsRequest, requestContext(ctx));
      } catch (err) {
        if (err instanceof ConnectError) throw err;
        // Internal details stay in the log, not in the answer.
        deps.onInternalError(err, ctx);
        throw new ConnectError("internal error", Code.Internal);
      }
      // The hub's own failures (store, stored state, bugs) reach the operator's log at error level.
      if (handled.fault !== undefined)
        deps.onInternalError(handled.fault.cause, ctx, { ...(handled.fault.groupId !== undefined ? { groupId: handled.fault.groupId } : {}), ...(handled.error !== undefined ? { dsError: dsErrorCodeName(handled.error.code) ?? String(handled.error.code) } : {}) });
      if (handled.error !== undefined) {
        throw new ConnectError(handled.error.message, statusForDsError(handled.error.code), undefined, [
          { desc: DSErrorDetailSchema, value: { dsResponse: handled.response } },
        ]);
      }
      return { dsResponse: handled.response };
    },
    ping() {
      return { domain: deps.domain };
    },
    async hubInfo(req) {
      if (deps.hubInfo === undefined) throw new ConnectError("HubInfo is not served here", Code.Unimplemented);
      let info;
      try {
        info = await deps.hubInfo.hubInfo(req.cipherSuite);
      } catch (err) {
        // A DS-level refusal (unknown ciphersuite) keeps its meaning; anything else is internal.
        const code = (err as { code?: unknown }).code;
        if (typeof code === "number") throw new ConnectError((err as Error).message, statusForDsError(code));
        throw err;
      }
      return {
        domain: deps.domain,
        externalSender: info.externalSender,
        protocolVersions: [...info.protocolVersions],
        fanoutSignatureKey: info.fanoutSignatureKey,
        serverVersion: deps.version ?? "",
      };
    },
  });
}
