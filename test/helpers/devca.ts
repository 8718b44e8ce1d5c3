// A development CA in a fresh temp directory, with certificates for the given
// domains, read into memory for TLS options.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDevCerts } from "../../src/cli/devcerts.js";

export interface DomainCert {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface DevCa {
  readonly dir: string;
  readonly caPath: string;
  readonly ca: Buffer;
  domain(name: string): DomainCert;
  cleanup(): Promise<void>;
}

export async function makeDevCa(domains: readonly string[]): Promise<DevCa> {
  const dir = await mkdtemp(join(tmpdir(), "mimi-ds-ca-"));
  const result = await createDevCerts(dir, domains);
  const certs = new Map<string, DomainCert>();
  for (const d of result.domains) {
    certs.set(d.domain, { certPath: d.cert, keyPath: d.key, cert: await readFile(d.cert), key: await readFile(d.key) });
  }
  return {
    dir,
    caPath: result.caCert,
    ca: await readFile(result.caCert),
    domain(name) {
      const c = certs.get(name);
      if (c === undefined) throw new Error(`no dev certificate for ${name}`);
      return c;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
