// Operator commands for provider-authenticated registration (docs/security.md):
//   mimi-ds registration-key --out DIR
//     a new Ed25519 issuer key: DIR/registration-issuer-key.pem (private, for
//     the identity system) and DIR/registration-issuer.pub.pem (for serve
//     --registration-key);
//   mimi-ds registration-credential --issuer-key FILE --client-id ID --signature-key BASE64 [--valid-for D]
//     prints a RegistrationCredential (base64) for one client id and key.
import { access, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { generateIssuerKeyPair, issueRegistrationCredential, parseIssuerPrivateKey } from "../delivery/registration.js";
import { ConfigError } from "./config.js";
import { parseDuration } from "./hardening-config.js";

export const registrationUsage = `registration commands:
  registration-key --out DIR
      a new Ed25519 issuer key pair: DIR/registration-issuer-key.pem (keep it in the identity system)
      and DIR/registration-issuer.pub.pem (give it to serve --registration-key)
  registration-credential --issuer-key FILE --client-id ID --signature-key BASE64 [--valid-for D]
      print a RegistrationCredential (base64) binding ID to that MLS signature public key,
      valid from now for D (default 1h); the client passes it to Register`;

export const registrationCommands = ["registration-key", "registration-credential"] as const;

export async function registrationCommand(command: (typeof registrationCommands)[number], args: string[]): Promise<number> {
  if (command === "registration-key") {
    const { values } = parseArgs({ args, strict: true, options: { out: { type: "string" } } });
    if (values.out === undefined) throw new ConfigError("registration-key needs --out DIR");
    const priv = join(values.out, "registration-issuer-key.pem");
    const pub = join(values.out, "registration-issuer.pub.pem");
    if (await exists(priv)) throw new ConfigError(`${priv} exists: an issuer key is never overwritten`);
    await mkdir(values.out, { recursive: true });
    const pair = generateIssuerKeyPair();
    await writeFile(priv, pair.privateKeyPem, { mode: 0o600 });
    await writeFile(pub, pair.publicKeyPem);
    console.log(`created ${priv} ${pub}`);
    return 0;
  }
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      "issuer-key": { type: "string" },
      "client-id": { type: "string" },
      "signature-key": { type: "string" },
      "valid-for": { type: "string" },
    },
  });
  const keyFile = values["issuer-key"];
  const clientId = values["client-id"];
  const sigKey = values["signature-key"];
  if (keyFile === undefined || clientId === undefined || sigKey === undefined) {
    throw new ConfigError("registration-credential needs --issuer-key FILE, --client-id ID and --signature-key BASE64");
  }
  const signaturePublicKey = Buffer.from(sigKey, "base64");
  if (signaturePublicKey.length === 0 || signaturePublicKey.toString("base64").replace(/=+$/, "") !== sigKey.replace(/=+$/, "")) {
    throw new ConfigError("--signature-key wants the MLS signature public key in base64");
  }
  let validFor: number;
  try {
    validFor = parseDuration(values["valid-for"] ?? "1h", "--valid-for");
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const issuer = parseIssuerPrivateKey(await readFile(keyFile, "utf8"));
  const now = Date.now();
  const credential = issueRegistrationCredential(issuer, {
    clientId: new TextEncoder().encode(clientId),
    signaturePublicKey,
    notBeforeMs: BigInt(now - 60_000), // a minute of clock skew
    notAfterMs: BigInt(now + validFor),
  });
  console.log(Buffer.from(credential).toString("base64"));
  return 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
