import { decodeDSResponse, DSErrorCode, type DSResponse } from "../wire/index.js";
import { DSFailure } from "./errors.js";

// The other DSs this one federates with, as the domain layer sees them: a way
// to hand a DSRequest to the DS of a domain (over mutual TLS, configured in
// src/delivery/peers.ts) and get its DSResponse back.
export interface PeerHubs {
  /** Whether `domain` is a configured peer. */
  has(domain: string): boolean;
  /** Submit TLS-serialized DSRequest bytes to the DS of `domain`; resolves with its DSResponse bytes (errors included). */
  submit(domain: string, dsRequest: Uint8Array): Promise<Uint8Array>;
}

/** A peer's answer as a DSResponse; bytes that are not one make the peer unavailable. */
export function decodeForwarded(domain: string, answer: Uint8Array): DSResponse {
  try {
    return decodeDSResponse(answer);
  } catch {
    throw new DSFailure(DSErrorCode.unavailable, `${domain} answered with bytes that are not a DSResponse`);
  }
}
