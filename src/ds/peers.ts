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

/**
 * Hands a request to a peer DS. A peer that does not answer (down, reset,
 * timed out) is `unavailable` for the caller: another system's outage, not
 * the caller's fault nor this DS's bug, so it is no server fault either.
 */
export async function askPeer(peers: PeerHubs, domain: string, dsRequest: Uint8Array): Promise<DSResponse> {
  let answer: Uint8Array;
  try {
    answer = await peers.submit(domain, dsRequest);
  } catch (err) {
    throw new DSFailure(DSErrorCode.unavailable, `the DS of ${domain} did not answer (${err instanceof Error ? err.message : String(err)}); it may or may not have taken the request`);
  }
  return decodeForwarded(domain, answer);
}

/** A peer's answer as a DSResponse; bytes that are not one make the peer unavailable. */
export function decodeForwarded(domain: string, answer: Uint8Array): DSResponse {
  try {
    return decodeDSResponse(answer);
  } catch {
    throw new DSFailure(DSErrorCode.unavailable, `${domain} answered with bytes that are not a DSResponse`);
  }
}
