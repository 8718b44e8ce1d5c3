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

const segment = /^[a-z0-9._~-]+$/;

/**
 * Why `clientId` is not the canonical identifier of a client of `domain`
 * (undefined when it is). The DS registers only canonical ids, so no two
 * registered ids differ by case, port, userinfo or encoding only:
 * - `mimi://<domain>/<segment>(/<segment>)*`, e.g. mimi://example.com/u/alice/d/1;
 * - `<user>:<device>@<domain>`, e.g. alice:1@example.com;
 * where `<domain>` is exactly the DS domain (lower case, no port, no trailing
 * dot) and every segment, user and device is lower-case ASCII letters,
 * digits and `.` `_` `~` `-` (no percent-encoding). The bare `user@domain`
 * form names no device and is not registered.
 */
export function nonCanonicalClientId(clientId: string, domain: string): string | undefined {
  const d = domain.toLowerCase();
  if (clientId.startsWith("mimi://")) {
    const rest = clientId.slice("mimi://".length);
    const slash = rest.indexOf("/");
    const authority = slash < 0 ? rest : rest.slice(0, slash);
    if (authority !== d) return `the authority of a MIMI URI must be exactly ${d} (no case change, port or userinfo)`;
    const path = slash < 0 ? "" : rest.slice(slash + 1);
    if (path === "") return "a MIMI URI needs a path (e.g. /u/<user>/d/<device>)";
    if (!path.split("/").every((s) => segment.test(s))) {
      return "MIMI URI path segments must be non-empty lower-case ASCII letters, digits, '.', '_', '~' or '-'";
    }
    return undefined;
  }
  const at = clientId.indexOf("@");
  if (at < 0 || at !== clientId.lastIndexOf("@")) return "not a MIMI URI (mimi://...) nor <user>:<device>@<domain>";
  if (clientId.slice(at + 1) !== d) return `the domain after '@' must be exactly ${d} (no case change or port)`;
  const local = clientId.slice(0, at).split(":");
  if (local.length !== 2) return "the part before '@' must be <user>:<device>";
  if (!local.every((s) => segment.test(s))) return "user and device must be non-empty lower-case ASCII letters, digits, '.', '_', '~' or '-'";
  return undefined;
}
