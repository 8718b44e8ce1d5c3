// One module per DS operation (draft Section 9, plus the requests the draft
// needs but leaves unnamed). Each validates and stages; merge.ts commits.
import type { DSRequest, DSRequestTypeName } from "../../wire/index.js";
import type { RequestContext } from "../handler.js";
import type { DSContext } from "../context.js";
import type { HostedGroup } from "../groups.js";
import type { StagedRequest } from "../merge.js";
import { addClients } from "./add-clients.js";
import { createGroup } from "./create-group.js";
import { deleteGroup } from "./delete-group.js";
import { externalCommitInfo } from "./external-commit-info.js";
import { externalJoin } from "./external-join.js";
import { keyPackages } from "./key-packages.js";
import { reinitializeGroup } from "./reinitialize-group.js";
import { removeClients } from "./remove-clients.js";
import { requestGroupId } from "./request-group-id.js";
import { selfRemoveClient } from "./self-remove-client.js";
import { sendMessage } from "./send-message.js";
import { updateClient } from "./update-client.js";
import { welcomeInfo } from "./welcome-info.js";

export interface OperationInput {
  readonly request: DSRequest;
  /** The DSRequest bytes as received (signatures are checked over them). */
  readonly raw: Uint8Array;
  readonly context: RequestContext;
  /** The group the request names, and its hosted state when this hub has it. */
  readonly groupId?: Uint8Array;
  readonly group?: HostedGroup;
}

export type Operation = (ctx: DSContext, input: OperationInput) => Promise<StagedRequest>;

export const operations: { readonly [T in DSRequestTypeName]: Operation } = {
  request_group_id: requestGroupId,
  create_group: createGroup,
  delete_group: deleteGroup,
  add_clients: addClients,
  remove_clients: removeClients,
  self_remove_client: selfRemoveClient,
  update_client: updateClient,
  external_join: externalJoin,
  send_message: sendMessage,
  key_packages: keyPackages,
  welcome_info: welcomeInfo,
  external_commit_info: externalCommitInfo,
  reinitialize_group: reinitializeGroup,
};
