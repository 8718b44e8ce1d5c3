// DS error code -> RPC status. The DS answers an error both inside the
// DSResponse (its own code and text) and as the RPC status, so that callers that
// only look at the status (grpc-js, buf curl, load tools) still see the class of
// failure. The table itself lives with the codes in src/wire/errors.ts.
import { Code } from "@connectrpc/connect";
import { dsErrorStatusName } from "../wire/errors.js";

/** The RPC status for a DS error code (codes this version does not know: Unknown). */
export function statusForDsError(dsErrorCode: number): Code {
  return Code[dsErrorStatusName(dsErrorCode)];
}
