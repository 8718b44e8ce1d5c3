// The DSRequestHandler the server is given: decode the DSRequest, check its
// version, find the group it is about, and run its operation with the group's
// lock held; the operation stages, merge.ts makes it durable. Every failure
// becomes one DSError and changes nothing.
import {
  decodeDSRequest,
  type DSErrorCodeValue,
  type DSResponse,
  dsErrorResponse,
  DS_PROTOCOL_VERSION,
  DSErrorCode,
  encodeDSResponse,
  type DSRequest,
  mlsMessageGroupId,
} from "../wire/index.js";
import { EpochConflictError } from "../store/errors.js";
import { memberAt } from "../mls/index.js";
import type { DSRequestHandler, HandledRequest, RequestContext } from "./handler.js";
import type { DSContext } from "./context.js";
import { DSFailure, toDSFailure } from "./errors.js";
import { groupKey } from "./groups.js";
import { mergeStaged } from "./merge.js";
import { hubDomainOfGroupId } from "./ops/common.js";
import { askPeer } from "./peers.js";
import { operations, type OperationInput } from "./ops/index.js";

export function createDispatcher(ctx: DSContext): DSRequestHandler {
  return {
    async handle(bytes, requestContext) {
      try {
        const response = await handleRequest(ctx, bytes, requestContext);
        return { response: encodeDSResponse(response) };
      } catch (err) {
        return errorAnswer(toDSFailure(err), bytes);
      }
    },
  };
}

function errorAnswer(f: DSFailure, bytes: Uint8Array): HandledRequest {
  return {
    response: encodeDSResponse(dsErrorResponse(f.code, f.message, f.currentEpoch)),
    error: { code: f.code, message: f.message },
    ...(f.fault !== undefined ? { fault: { cause: f.fault.cause, ...groupOfRaw(bytes) } } : {}),
  };
}

/** The group a request names, for the log line of a failure of the hub (the request decoded before it failed). */
function groupOfRaw(bytes: Uint8Array): { groupId?: string } {
  try {
    const id = groupIdOf(decodeDSRequest(bytes));
    return id !== undefined ? { groupId: groupKey(id) } : {};
  } catch {
    return {};
  }
}

async function handleRequest(ctx: DSContext, bytes: Uint8Array, rc: RequestContext) {
  // The version comes first (uint16): a request of another version is refused
  // as such even when the rest does not parse as our version's body.
  if (bytes.length >= 2) {
    const version = (bytes[0]! << 8) | bytes[1]!;
    if (version !== DS_PROTOCOL_VERSION) throw new DSFailure(DSErrorCode.unsupported_version, `DS protocol version ${version} is not supported (this DS speaks ${DS_PROTOCOL_VERSION})`);
  }
  const request = decodeDSRequest(bytes);
  const type = request.requestBody.requestType;
  const operation = operations[type];
  const groupId = groupIdOf(request);
  // Section 4.1: a request for a group hosted elsewhere goes, unchanged, to its hub.
  const hubDomain = groupId !== undefined ? hubDomainOfGroupId(groupId) : undefined;
  if (rc.peerDomain !== undefined) ctx.rateLimiter.hit("perDomain", rc.peerDomain);
  if (hubDomain !== undefined && hubDomain !== ctx.config.domain) return forward(ctx, hubDomain, bytes);
  const run = async () => {
    const key = groupId !== undefined ? groupKey(groupId) : undefined;
    // Reads answer from the group's latest epoch even when another instance wrote it.
    const reads = type === "external_commit_info" || type === "welcome_info";
    const group = key === undefined ? undefined : reads ? await ctx.groups.getFresh(key) : await ctx.groups.get(key);
    if (group !== undefined) {
      ctx.rateLimiter.hit("perGroup", group.key);
      // The claimed sender; a forged claim fails authentication in the operation right after.
      const auth = request.authenticationData;
      const claimed = auth.authType === "client_signature" ? memberAt(group.state, auth.senderIndex)?.clientId : undefined;
      if (claimed !== undefined) ctx.rateLimiter.hit("perClient", claimed);
    }
    const input: OperationInput = { request, raw: bytes, context: rc, ...(groupId !== undefined ? { groupId } : {}), ...(group !== undefined ? { group } : {}) };
    return mergeStaged(ctx, await operation(ctx, input));
  };
  if (groupId === undefined) return run();
  const key = groupKey(groupId);
  if (type === "send_message" && ctx.store.appliesInOrder === true && ctx.groups.has(key)) {
    // Optimistic, without the group's lock: send_message changes no group state and
    // its write carries the epoch check, and the store applies writes in call order,
    // so a commit staged meanwhile either lands after it or makes it fail here
    // (EpochConflictError); then it is judged again below, with the lock. Sends of
    // one group thus verify concurrently and share a group commit. Only for a cached
    // group (run() then reads it synchronously): a load outside the lock could put
    // an older state into the cache after a commit.
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof EpochConflictError)) throw err;
    }
  }
  return ctx.groups.exclusive(key, async () => {
    try {
      return await run();
    } catch (err) {
      // Another instance moved the group on: reload it and judge the request again.
      if (!(err instanceof EpochConflictError)) throw err;
      ctx.groups.evict(key);
      return run();
    }
  });
}

/** Hand the request to the hub of its group and answer with that hub's DSResponse. */
async function forward(ctx: DSContext, hubDomain: string, bytes: Uint8Array): Promise<DSResponse> {
  if (ctx.peers === undefined || !ctx.peers.has(hubDomain))
    throw new DSFailure(DSErrorCode.unknown_group, `the group is hosted by ${hubDomain}, which is not a peer of ${ctx.config.domain}`);
  const response = await askPeer(ctx.peers, hubDomain, bytes);
  const body = response.responseBody;
  // The hub's error stays the hub's error (code, sentence, epoch), with the matching RPC status here too.
  if (body.responseType === "error") throw new DSFailure(body.error.code as DSErrorCodeValue, body.error.message, body.error.currentEpoch);
  return response;
}


/** The group a request is about, from its body (for most, the MLSMessage's group_id). */
export function groupIdOf(request: DSRequest): Uint8Array | undefined {
  const b = request.requestBody;
  switch (b.requestType) {
    case "delete_group":
      return mlsMessageGroupId(b.deleteGroupRequest.groupUpdate.commit);
    case "add_clients":
      return mlsMessageGroupId(b.addClientsRequest.groupUpdate.commit);
    case "remove_clients":
      return mlsMessageGroupId(b.removeClientsRequest.groupUpdate.commit);
    case "self_remove_client":
      return mlsMessageGroupId(b.selfRemoveClientRequest.proposal);
    case "update_client":
      return mlsMessageGroupId(b.updateClientRequest.groupUpdate.commit);
    case "external_join":
      return mlsMessageGroupId(b.externalJoinRequest.groupUpdate.commit);
    case "send_message":
      return mlsMessageGroupId(b.sendMessageRequest.applicationMessage);
    case "reinitialize_group":
      return mlsMessageGroupId(b.reInitializeGroupRequest.commit.commit);
    case "create_group":
      return mlsMessageGroupId(b.createGroupRequest.groupInfo);
    case "welcome_info":
      return b.welcomeInfoRequest.groupId;
    case "external_commit_info":
      return b.externalCommitInfoRequest.groupId;
    case "key_packages":
    case "request_group_id":
      return undefined;
  }
}
