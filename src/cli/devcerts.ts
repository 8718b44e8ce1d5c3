// Development TLS material: a local CA (ECDSA P-256) and, per domain, a
// certificate valid for both serverAuth and clientAuth, so that the same files
// serve a DS's port and its mutual-TLS calls to other DSs. Its DNS names are
// the domain first (peers take a DS's domain from the first DNS name of its
// client certificate), then the extra names asked for (the endpoint's host,
// e.g. ds.a.example), then localhost; and IP 127.0.0.1. Made once: existing
// files are kept, so a restarted DS keeps its identity and peers keep trusting it.
// Built with PKI.js on WebCrypto (pure JS, no openssl binary needed).
import { createHash, webcrypto, X509Certificate } from "node:crypto";
import { access, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";

const crypto = webcrypto as unknown as Crypto;
// Cast: the TypeScript DOM types pkijs declares against run ahead of Node's.
const engine = new pkijs.CryptoEngine({ name: "node-webcrypto", crypto }) as unknown as pkijs.ICryptoEngine;

const ecdsa = { name: "ECDSA", namedCurve: "P-256" } as const;
const day = 24 * 60 * 60 * 1000;
const oid = {
  commonName: "2.5.4.3",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

export interface DevCertsResult {
  readonly caCert: string;
  readonly caKey: string;
  readonly caCreated: boolean;
  /**
   * Per domain: the cert.pem and key.pem paths, whether they were made now,
   * the certificate's DNS names, and the extra names asked for that a kept
   * certificate lacks.
   */
  readonly domains: readonly { domain: string; cert: string; key: string; created: boolean; names: readonly string[]; missing: readonly string[] }[];
}

export interface DevCertsOptions {
  /** DNS names added after the domain (e.g. the host of the DS's endpoint). */
  readonly extraNames?: readonly string[];
}

export class DevCertsError extends Error {
  override readonly name = "DevCertsError";
}

const domainPattern = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export async function createDevCerts(outDir: string, domains: readonly string[], options: DevCertsOptions = {}): Promise<DevCertsResult> {
  for (const d of domains) {
    // The domain becomes a directory name: only DNS names, never paths.
    if (!domainPattern.test(d)) throw new DevCertsError(`not a DNS domain name: ${JSON.stringify(d)}`);
  }
  const extra = (options.extraNames ?? []).map((n) => n.toLowerCase());
  for (const n of extra) if (!domainPattern.test(n)) throw new DevCertsError(`--san wants a DNS name, got ${JSON.stringify(n)}`);
  await mkdir(outDir, { recursive: true });
  const caCertPath = join(outDir, "ca.pem");
  const caKeyPath = join(outDir, "ca-key.pem");

  let caCreated = false;
  let ca: Issuer;
  if ((await exists(caCertPath)) && (await exists(caKeyPath))) {
    const cert = pkijs.Certificate.fromBER(pemDecode(await readFile(caCertPath, "utf8"), "CERTIFICATE"));
    const key = await crypto.subtle.importKey(
      "pkcs8",
      pemDecode(await readFile(caKeyPath, "utf8"), "PRIVATE KEY"),
      ecdsa,
      false,
      ["sign"],
    );
    ca = { cert, key };
  } else {
    ca = await makeCertificate({ commonName: "MIMI DS development CA", ca: true, days: 10 * 365 });
    await writeFile(caKeyPath, await exportKey(ca.key), { mode: 0o600 });
    await writeFile(caCertPath, pemEncode(ca.cert.toSchema().toBER(false), "CERTIFICATE"));
    caCreated = true;
  }

  const results = [];
  for (const domain of domains) {
    const dir = join(outDir, domain);
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    let created = false;
    if (!((await exists(cert)) && (await exists(key)))) {
      await mkdir(dir, { recursive: true });
      const leaf = await makeCertificate({ commonName: domain, ca: false, days: 825, domain, extraNames: extra, issuer: ca });
      await writeFile(key, await exportKey(leaf.key), { mode: 0o600 });
      await writeFile(cert, pemEncode(leaf.cert.toSchema().toBER(false), "CERTIFICATE"));
      created = true;
    }
    const names = (new X509Certificate(await readFile(cert)).subjectAltName ?? "")
      .split(", ")
      .filter((e) => e.startsWith("DNS:"))
      .map((e) => e.slice(4));
    results.push({ domain, cert, key, created, names, missing: extra.filter((n) => !names.includes(n)) });
  }
  return { caCert: caCertPath, caKey: caKeyPath, caCreated, domains: results };
}

interface Issuer {
  readonly cert: pkijs.Certificate;
  readonly key: CryptoKey;
}

interface CertificateSpec {
  readonly commonName: string;
  readonly ca: boolean;
  readonly days: number;
  /** Leaf only: the DS domain, first DNS name of the subjectAltName. */
  readonly domain?: string;
  /** Leaf only: further DNS names, after the domain. */
  readonly extraNames?: readonly string[];
  /** Absent: self-signed. */
  readonly issuer?: Issuer;
}

async function makeCertificate(spec: CertificateSpec): Promise<Issuer> {
  const keys = (await crypto.subtle.generateKey(ecdsa, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const cert = new pkijs.Certificate();
  cert.version = 2; // v3
  cert.serialNumber = new asn1js.Integer({ valueHex: randomSerial() });
  setName(cert.subject, spec.commonName);
  if (spec.issuer) cert.issuer = spec.issuer.cert.subject;
  else setName(cert.issuer, spec.commonName);
  const now = Date.now();
  cert.notBefore.value = new Date(now - day);
  cert.notAfter.value = new Date(now + spec.days * day);
  await cert.subjectPublicKeyInfo.importKey(keys.publicKey, engine);

  const ski = sha1(cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView);
  const extensions: pkijs.Extension[] = [
    extension("2.5.29.19", true, new pkijs.BasicConstraints(spec.ca ? { cA: true, pathLenConstraint: 0 } : {}).toSchema()),
    // KeyUsage bits: digitalSignature (0) for leaves; keyCertSign (5) and cRLSign (6) for the CA.
    extension(
      "2.5.29.15",
      true,
      spec.ca
        ? new asn1js.BitString({ valueHex: new Uint8Array([0x06]), unusedBits: 1 })
        : new asn1js.BitString({ valueHex: new Uint8Array([0x80]), unusedBits: 7 }),
    ),
    extension("2.5.29.14", false, new asn1js.OctetString({ valueHex: ski })),
  ];
  if (spec.issuer) {
    const issuerSki = sha1(spec.issuer.cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView);
    extensions.push(
      extension(
        "2.5.29.35",
        false,
        new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: issuerSki }) }).toSchema(),
      ),
    );
  }
  if (!spec.ca) {
    extensions.push(
      extension("2.5.29.37", false, new pkijs.ExtKeyUsage({ keyPurposes: [oid.serverAuth, oid.clientAuth] }).toSchema()),
    );
    const names = [...new Set([spec.domain ?? spec.commonName, ...(spec.extraNames ?? []), "localhost"])].map(
      (value) => new pkijs.GeneralName({ type: 2, value }), // dNSName
    );
    names.push(
      new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: new Uint8Array([127, 0, 0, 1]) }) }),
    );
    extensions.push(extension("2.5.29.17", false, new pkijs.AltName({ altNames: names }).toSchema()));
  }
  cert.extensions = extensions;
  await cert.sign(spec.issuer?.key ?? keys.privateKey, "SHA-256", engine);
  return { cert, key: keys.privateKey };
}

function extension(extnID: string, critical: boolean, value: asn1js.BaseBlock): pkijs.Extension {
  return new pkijs.Extension({ extnID, critical, extnValue: value.toBER(false) });
}

function setName(name: pkijs.RelativeDistinguishedNames, commonName: string): void {
  name.typesAndValues.push(
    new pkijs.AttributeTypeAndValue({ type: oid.commonName, value: new asn1js.Utf8String({ value: commonName }) }),
  );
}

async function exportKey(key: CryptoKey): Promise<string> {
  return pemEncode(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

function pemEncode(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function pemDecode(pem: string, label: string): Uint8Array<ArrayBuffer> {
  const m = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`).exec(pem);
  if (!m?.[1]) throw new DevCertsError(`no ${label} PEM block`);
  return new Uint8Array(Buffer.from(m[1].replace(/\s+/g, ""), "base64"));
}

function sha1(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha1").update(bytes).digest());
}

/** 16 random bytes, a positive INTEGER without a leading zero byte. */
function randomSerial(): Uint8Array {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
