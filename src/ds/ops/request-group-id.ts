// Request group id (draft 9.1): a fresh, unique group id naming this hub.
import { randomBytes } from "node:crypto";
import { DS_PROTOCOL_VERSION } from "../../wire/index.js";
import type { Operation } from "./index.js";
import { answerOnly } from "../merge.js";

// 128 random bits make collisions negligible without a reservation table; the
// suffix names the hub so any DS can route requests for the group (Section 4.1).
export const requestGroupId: Operation = async (ctx) => {
  const groupId = new TextEncoder().encode(`${randomBytes(16).toString("base64url")}@${ctx.config.domain}`);
  return answerOnly({ protocolVersion: DS_PROTOCOL_VERSION, responseBody: { responseType: "group_id", groupId } });
};
