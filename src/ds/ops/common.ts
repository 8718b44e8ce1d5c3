// Small pieces several operations share.
import { DSErrorCode, dsOkResponse, type DSRequestBody } from "../../wire/index.js";
import { failWith } from "../errors.js";
import type { HostedGroup } from "../groups.js";
import type { OperationInput } from "./index.js";

export const ok = dsOkResponse;

/** The hosted group the request names, or unknown_group. */
export function requireGroup(input: OperationInput): HostedGroup {
  if (input.group === undefined) failWith(DSErrorCode.unknown_group, "this hub hosts no group with that group id");
  return input.group;
}

/** The request body, narrowed to the operation's type (the dispatcher routes by it). */
export function bodyOf<T extends DSRequestBody["requestType"]>(input: OperationInput, type: T): Extract<DSRequestBody, { requestType: T }> {
  const b = input.request.requestBody;
  if (b.requestType !== type) failWith(DSErrorCode.internal, `routed ${b.requestType} to ${type}`);
  return b as Extract<DSRequestBody, { requestType: T }>;
}

/** The DS domain a group id names (`<random>@<hub domain>`, docs/protocol.md). */
export function hubDomainOfGroupId(groupId: Uint8Array): string | undefined {
  const s = Buffer.from(groupId).toString("utf8");
  const at = s.lastIndexOf("@");
  return at > 0 && at < s.length - 1 ? s.slice(at + 1).toLowerCase() : undefined;
}
