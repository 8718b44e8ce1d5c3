// The GroupInfo extensions the hub stores and serves (RFC 9420 12.4.3), checked
// when a GroupInfo (create_group) or a PartialGroupInfo (every commit) arrives:
// joiners take them from the hub, so a malformed one would break every later
// external join. A malformed extension is `invalid_message` and nothing is
// stored. Stored groups are not re-checked: a GroupInfo accepted before these
// checks (ts-mls 1.6.4's bare external_pub) still replays and is served until
// the next commit replaces it (docs/protocol.md, "Deviations from ts-mls").
import type { Extension } from "ts-mls";
import { decodeRequiredCapabilities } from "ts-mls/requiredCapabilities.js";
import { ratchetTreeBytes, type GroupState } from "../mls/index.js";
import { decodeExternalSenders, decodeWith, DSErrorCode, encodeWith, extensionTypeNumber, opaqueV, EXTERNAL_SENDERS_EXTENSION_TYPE } from "../wire/index.js";
import { failWith } from "./errors.js";

/** RFC 9420 extension types a GroupInfo may carry that the hub reads. */
export const GroupInfoExtensionType = { ratchet_tree: 0x0002, required_capabilities: 0x0003, external_pub: 0x0004, external_senders: EXTERNAL_SENDERS_EXTENSION_TYPE } as const;

// HPKE public key sizes (RFC 9180 Npk) of the DHKEMs of the RFC 9420 suites.
const KEM_PUBLIC_KEY_LENGTHS: readonly [string, number][] = [
  ["DHKEMX25519", 32],
  ["DHKEMX448", 56],
  ["DHKEMP256", 65],
  ["DHKEMP384", 97],
  ["DHKEMP521", 133],
];

/** Npk of the suite's KEM, when it is one of the DHKEMs above. */
export function kemPublicKeyLength(cipherSuite: string): number | undefined {
  return KEM_PUBLIC_KEY_LENGTHS.find(([kem]) => cipherSuite.includes(kem))?.[1];
}

/** `struct { HPKEPublicKey external_pub; }`, HPKEPublicKey = `opaque<V>` (RFC 9420 12.4.3.2, 5.1.1). */
export function makeExternalPubExtension(publicKey: Uint8Array): Extension {
  return { extensionType: GroupInfoExtensionType.external_pub, extensionData: encodeWith(opaqueV, publicKey) };
}

/** The HPKE key of an RFC 9420 external_pub extension_data; throws WireDecodeError when it is not one. */
export function decodeExternalPub(extensionData: Uint8Array): Uint8Array {
  return decodeWith(opaqueV, extensionData, "ExternalPub");
}

const reason = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Checks a (Partial)GroupInfo's extensions against the state of the epoch it describes. */
export function checkGroupInfoExtensions(state: GroupState, extensions: readonly Extension[], operation: string): void {
  const seen = new Set<number>();
  const bad = (what: string): never => failWith(DSErrorCode.invalid_message, `${operation}: the GroupInfo's ${what}`);
  for (const ext of extensions) {
    const type = extensionTypeNumber(ext);
    if (seen.has(type)) bad(`extension 0x${type.toString(16).padStart(4, "0")} appears twice (RFC 9420 13.4 forbids duplicates)`);
    seen.add(type);
    const data = ext.extensionData;
    switch (type) {
      case GroupInfoExtensionType.external_pub: {
        let key: Uint8Array;
        try {
          key = decodeExternalPub(data);
        } catch (err) {
          return bad(`external_pub is not RFC 9420's opaque external_pub<V> (${reason(err)}); ts-mls 1.6.4 wrote the bare key`);
        }
        const npk = kemPublicKeyLength(state.groupContext.cipherSuite);
        if (npk !== undefined && key.length !== npk) bad(`external_pub holds a ${key.length}-byte key; the suite's KEM uses ${npk}`);
        break;
      }
      case GroupInfoExtensionType.ratchet_tree:
        // The tree a joiner would use instead of asking the hub: it must be the epoch's tree.
        if (!Buffer.from(data).equals(Buffer.from(ratchetTreeBytes(state)))) bad("ratchet_tree is not the ratchet tree of the epoch");
        break;
      case GroupInfoExtensionType.external_senders:
        try {
          decodeExternalSenders(data);
        } catch (err) {
          bad(`external_senders is not RFC 9420's ExternalSender external_senders<V> (${reason(err)})`);
        }
        break;
      case GroupInfoExtensionType.required_capabilities: {
        let decoded: ReturnType<typeof decodeRequiredCapabilities>;
        try {
          decoded = decodeRequiredCapabilities(data, 0);
        } catch {
          decoded = undefined;
        }
        if (decoded === undefined || decoded[1] !== data.length) bad("required_capabilities does not decode");
        break;
      }
      default:
        // Other extensions (GREASE, application ones) are the clients' business.
        break;
    }
  }
}
