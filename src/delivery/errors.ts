// Store failures as RPC statuses, for the delivery services.
import { Code, ConnectError } from "@connectrpc/connect";
import { StoreRangeError, StoreUnavailableError } from "../store/errors.js";

/** Rethrows a store error as the ConnectError a caller can act on (others pass unchanged). */
export function rpcError(err: unknown): unknown {
  if (err instanceof ConnectError) return err;
  if (err instanceof StoreRangeError) return new ConnectError(err.message, Code.InvalidArgument);
  if (err instanceof StoreUnavailableError) return new ConnectError("storage is unavailable", Code.Unavailable);
  return err;
}

/** `fn` with store errors mapped by rpcError. */
export async function mapped<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw rpcError(err);
  }
}
