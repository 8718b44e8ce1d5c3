// The SDK's MLS clients need a ts-mls that reads and writes RFC 9420
// external_senders (one vector of senders): ts-mls 1.6.4 as published
// writes one sender per extension and rejects the RFC form ("Could not
// decode external_senders"). This repository patches it at install
// (patches/ts-mls+1.6.4.patch, upstream PR 476); a package consumer must do
// the same (docs/sdk.md). Checked once, so an unpatched install fails with
// that sentence instead of a CodecError deep inside createGroup.
import * as externalSender from "ts-mls/externalSender.js";

let checked = false;

export class TsMlsUnpatchedError extends Error {
  override readonly name = "TsMlsUnpatchedError";
}

export function assertTsMlsPatched(): void {
  if (checked) return;
  if (typeof (externalSender as Record<string, unknown>).decodeExternalSenders !== "function") {
    throw new TsMlsUnpatchedError(
      "ts-mls lacks the RFC 9420 external_senders fix: apply mimi-ds's patches/ts-mls+1.6.4.patch " +
        "to your node_modules/ts-mls (patch-package; docs/sdk.md, 'ts-mls patch')",
    );
  }
  checked = true;
}
