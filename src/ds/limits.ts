// Size limits of what a request carries, per policy (docs/security.md): the
// wire decoder's 16 MiB bound is for the whole request; these say how large an
// application message or a handshake message the hub stores and fans out.
import { DSErrorCode } from "../wire/index.js";
import type { DSContext } from "./context.js";
import { failWith } from "./errors.js";

/** too_large unless an MLS message of `bytes` bytes fits the policy for its kind. */
export function checkMessageSize(ctx: DSContext, kind: "application" | "handshake", bytes: number, what: string): void {
  const p = ctx.config.policy;
  const max = kind === "application" ? p.maxApplicationMessageBytes : p.maxHandshakeMessageBytes;
  if (bytes > max) failWith(DSErrorCode.too_large, `${what} has ${bytes} bytes; this hub accepts ${kind} messages of at most ${max}`);
}
