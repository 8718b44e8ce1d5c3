// Client identifiers and domains from leaf credentials.
//
// Rule (documented in docs/engine.md):
// - basic credential: the identity bytes as UTF-8 (invalid UTF-8 -> "hex:<hex>").
// - x509 credential: the first URI subjectAltName of the leaf certificate, else
//   the first email SAN, else "x509:<sha256 of the certificate, hex>".
// - other credential types: "<type>:<sha256 of the credential data, hex>".
// Domain of a client identifier:
// - `mimi://<domain>/...` (MIMI URI): the authority, lower-cased, port dropped;
// - `<user>:<device>@<domain>` or `<user>@<domain>`: the part after the last '@';
// - anything else: no domain (undefined).
import { X509Certificate, createHash } from "node:crypto";
import type { Credential } from "ts-mls";

const utf8 = new TextDecoder("utf-8", { fatal: true });

export function clientIdOf(c: Credential): string {
  if (c.credentialType === "basic") {
    try {
      return utf8.decode(c.identity);
    } catch {
      return "hex:" + Buffer.from(c.identity).toString("hex");
    }
  }
  if (c.credentialType === "x509") {
    const der = c.certificates[0];
    if (der === undefined) return "x509:";
    try {
      const san = new X509Certificate(der).subjectAltName ?? "";
      const entries = san.split(/,\s*/);
      const uri = entries.find((e) => e.startsWith("URI:"));
      if (uri !== undefined) return uri.slice(4);
      const email = entries.find((e) => e.startsWith("email:"));
      if (email !== undefined) return email.slice(6);
    } catch {
      /* fall through to the certificate hash */
    }
    return "x509:" + createHash("sha256").update(der).digest("hex");
  }
  const data = (c as unknown as { data?: Uint8Array }).data ?? new Uint8Array();
  return `${String((c as { credentialType: unknown }).credentialType)}:` + createHash("sha256").update(data).digest("hex");
}

export function domainOf(clientId: string): string | undefined {
  if (clientId.startsWith("mimi://")) {
    const rest = clientId.slice("mimi://".length);
    const authority = rest.split(/[/?#]/, 1)[0] ?? "";
    const host = authority.includes("@") ? authority.slice(authority.lastIndexOf("@") + 1) : authority;
    const noPort = host.startsWith("[") ? host : host.replace(/:\d+$/, "");
    return noPort.length > 0 ? noPort.toLowerCase() : undefined;
  }
  const at = clientId.lastIndexOf("@");
  if (at > 0 && at < clientId.length - 1) {
    const d = clientId.slice(at + 1);
    if (/^[A-Za-z0-9.-]+(:\d+)?$/.test(d)) return d.replace(/:\d+$/, "").toLowerCase();
  }
  return undefined;
}
