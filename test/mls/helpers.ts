// Shared helpers for the engine tests.
import { readFileSync } from "node:fs";
import { getCiphersuiteImpl, getCiphersuiteFromName, type CiphersuiteImpl, type CiphersuiteName } from "ts-mls";
import { getCiphersuiteNameFromId, type CiphersuiteId } from "ts-mls/crypto/ciphersuite.js";
import { nodeCryptoProvider } from "../../src/mls/crypto.js";

export const VECTORS = "/work/shared/vectors";
export const loadVector = <T>(name: string): T => JSON.parse(readFileSync(`${VECTORS}/${name}`, "utf8")) as T;
export const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "hex"));
export const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
export const suiteName = (id: number): CiphersuiteName => getCiphersuiteNameFromId(id as CiphersuiteId);

const implCache = new Map<CiphersuiteName, Promise<CiphersuiteImpl | string>>();
/** A ts-mls CiphersuiteImpl, or the reason it is unavailable (a missing optional package). */
export function tsMlsSuite(name: CiphersuiteName): Promise<CiphersuiteImpl | string> {
  let p = implCache.get(name);
  if (p === undefined) {
    p = (async () => {
      try {
        const impl = await getCiphersuiteImpl(getCiphersuiteFromName(name), nodeCryptoProvider);
        await impl.hpke.generateKeyPair();
        return impl;
      } catch (e) {
        return `ts-mls cannot run ${name}: ${(e as Error).message}`;
      }
    })();
    implCache.set(name, p);
  }
  return p;
}

/** Counts skipped cases with their reasons, printed once per file. */
export class SkipLog {
  readonly reasons = new Map<string, number>();
  skip(reason: string): void {
    this.reasons.set(reason, (this.reasons.get(reason) ?? 0) + 1);
  }
  report(label: string): void {
    for (const [r, n] of this.reasons) console.log(`[${label}] skipped ${n}: ${r}`);
  }
}
