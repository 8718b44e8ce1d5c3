// Small shared helpers of the ClientService: cipher suites by number, labeled
// signature checks with a suite's scheme, and the rpc_name of each method.
import { ciphersuites, type CiphersuiteName } from "ts-mls";
import { ClientService } from "../../gen/mimi/ds/v1/client_pb.js";
import { engineCrypto } from "../mls/index.js";
import { encodeSignContent } from "../wire/index.js";

export function suiteNameOf(id: number): CiphersuiteName | undefined {
  for (const [name, n] of Object.entries(ciphersuites)) if (n === id) return name as CiphersuiteName;
  return undefined;
}

/** Verify SignWithLabel(label, content) with the signature scheme of `suite`. */
export async function verifyLabeled(suite: CiphersuiteName, publicKey: Uint8Array, label: string, content: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const c = await engineCrypto(suite);
  const message = encodeSignContent(label, content);
  return c.verifySync !== undefined ? c.verifySync(publicKey, message, signature) : c.verify(publicKey, message, signature);
}

/** The rpc_name a ClientAuth must sign for `method` of ClientService. */
export const clientRpcNameOf = (method: keyof typeof ClientService.method): string =>
  `${ClientService.typeName}/${ClientService.method[method].name}`;
