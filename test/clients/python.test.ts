// A generated client in another language: Python modules generated from
// proto/ at test time with Debian's grpc tools (python3 -m grpc_tools.protoc),
// and test/clients/python/mimi_client.py on them, against a real `serve`
// process over TLS. It must see what the TypeScript SDK sees: the domain, the
// hub's ExternalSender, a reserved group id, and each DS error's code decoded
// from grpc-status-details-bin (google.rpc.Status -> DSErrorDetail -> DSResponse).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDSTransport, DSClient, type DSTransport } from "../../src/client/index.js";
import { DSErrorCode } from "../../src/wire/index.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { spawnServe, type ServeProcess } from "../helpers/process.js";

const run = promisify(execFile);
const python = "/usr/bin/python3"; // Debian's: python3-grpcio and python3-grpc-tools live in its dist-packages
const root = process.cwd();
const domain = "localhost";

let ca: DevCa;
let dataDir: string;
let genDir: string;
let serve: ServeProcess;
let transport: DSTransport;
let generateMs = 0;

beforeAll(async () => {
  await run(python, ["-c", "import grpc, grpc_tools.protoc"]).catch(() => {
    throw new Error(`${python} lacks grpc/grpc_tools: apt-get install python3-grpcio python3-grpc-tools (.ci/run does)`);
  });
  genDir = await mkdtemp(join(tmpdir(), "mimi-ds-py-"));
  const protos = (await readdir(join(root, "proto/mimi/ds/v1"))).filter((f) => f.endsWith(".proto")).map((f) => `proto/mimi/ds/v1/${f}`);
  const started = performance.now();
  await run(
    python,
    ["-m", "grpc_tools.protoc", "-Iproto", "-Itest/clients/proto", `--python_out=${genDir}`, `--grpc_python_out=${genDir}`, ...protos, "test/clients/proto/google/rpc/status.proto"],
    { cwd: root },
  );
  generateMs = performance.now() - started;
  ca = await makeDevCa([domain]);
  dataDir = await mkdtemp(join(tmpdir(), "mimi-ds-pyserve-"));
  serve = await spawnServe({ domain, dataDir, certsDir: ca.dir });
  transport = createDSTransport({ baseUrl: serve.url, ca: ca.ca });
});

afterAll(async () => {
  transport?.close();
  await serve?.stop();
  for (const dir of [genDir, dataDir]) if (dir) await rm(dir, { recursive: true, force: true });
  await ca?.cleanup();
});

interface DSAnswer {
  readonly type: string;
  readonly code?: number;
  readonly message?: string;
  readonly group_id?: string;
}
interface PythonErrors {
  readonly rpc_code: string;
  readonly status_code: number;
  readonly type_url: string;
  readonly detail: DSAnswer;
}
interface PythonResult {
  readonly ping: string;
  readonly hub_info: {
    readonly domain: string;
    readonly protocol_versions: number[];
    readonly fanout_signature_key: string;
    readonly external_sender: { readonly signature_key: string; readonly credential_type: number; readonly identity?: string };
  };
  readonly request_group_id: DSAnswer;
  readonly errors: Record<"garbage" | "unknown_group" | "key_packages", PythonErrors>;
  readonly key_packages_hex: string;
  readonly hub_pb2_file: string;
}

describe("a generated Python client (grpc_tools) against serve", () => {
  it("generates every mimi.ds.v1 module", async () => {
    const files = (await readdir(join(genDir, "mimi/ds/v1"))).sort();
    for (const name of ["admin", "client", "fanout", "hub"]) {
      expect(files).toContain(`${name}_pb2.py`);
      expect(files).toContain(`${name}_pb2_grpc.py`);
    }
    console.log(`python code generation: ${Math.round(generateMs)} ms`);
    expect(existsSync(join(genDir, "google/rpc/status_pb2.py"))).toBe(true);
  });

  it("calls Ping, HubInfo and Submit over TLS and decodes the DS errors", async () => {
    const started = performance.now();
    const r = await runClient([genDir]);
    console.log(`python client run: ${Math.round(performance.now() - started)} ms`);
    expect(r.hub_pb2_file.startsWith(genDir)).toBe(true);
    await checkResult(r);
  });

  it("buf.gen.python.yaml (protoc's python/pyi and grpc_python_plugin) makes modules the same client runs on", async () => {
    const work = await mkdtemp(join(tmpdir(), "mimi-ds-bufpy-"));
    try {
      await cp(join(root, "proto"), join(work, "proto"), { recursive: true });
      for (const f of ["buf.yaml", "buf.gen.python.yaml"]) await cp(join(root, f), join(work, f));
      await run(join(root, "node_modules/.bin/buf"), ["generate", "--template", "buf.gen.python.yaml"], { cwd: work, timeout: 60_000 });
      const out = join(work, "out/python");
      expect((await readdir(join(out, "mimi/ds/v1"))).sort()).toEqual(
        ["admin", "client", "fanout", "hub"].flatMap((n) => [`${n}_pb2.py`, `${n}_pb2.pyi`, `${n}_pb2_grpc.py`]).sort(),
      );
      // google.rpc.Status still comes from the grpc_tools directory (it is not part of proto/).
      const r = await runClient([out, genDir]);
      expect(r.hub_pb2_file.startsWith(out)).toBe(true);
      await checkResult(r);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});

async function runClient(gen: readonly string[]): Promise<PythonResult> {
  const { stdout } = await run(
    python,
    [
      join(root, "test/clients/python/mimi_client.py"),
      "--target",
      `localhost:${serve.port}`,
      "--ca",
      ca.caPath,
      ...gen.flatMap((g) => ["--gen", g]),
    ],
    { timeout: 60_000 },
  );
  return JSON.parse(stdout) as PythonResult;
}

async function checkResult(r: PythonResult): Promise<void> {
  expect(r.ping).toBe(domain);

  // HubInfo: what the TypeScript SDK decodes from the same answer.
  const ts = await new DSClient(transport).hubInfo(1);
  const sender = ts.externalSender;
  expect(r.hub_info.domain).toBe(domain);
  expect(r.hub_info.protocol_versions).toEqual([...ts.protocolVersions]);
  expect(r.hub_info.fanout_signature_key).toBe(Buffer.from(ts.fanoutSignatureKey).toString("hex"));
  expect(r.hub_info.external_sender.signature_key).toBe(Buffer.from(sender.signaturePublicKey).toString("hex"));
  expect(r.hub_info.external_sender.credential_type).toBe(1);
  expect(sender.credential.credentialType).toBe("basic");
  if (sender.credential.credentialType === "basic") {
    expect(r.hub_info.external_sender.identity).toBe(new TextDecoder().decode(sender.credential.identity));
  }

  expect(r.request_group_id.type).toBe("group_id");
  expect(r.request_group_id.group_id).toMatch(new RegExp(`^[A-Za-z0-9_-]{22}@${domain}$`));

  const expectDsError = (e: PythonErrors, rpc: string, code: number) => {
    expect(e.rpc_code).toBe(rpc);
    expect(e.type_url).toBe("type.googleapis.com/mimi.ds.v1.DSErrorDetail");
    expect(e.detail.type).toBe("error");
    expect(e.detail.code).toBe(code);
    expect(e.detail.message!.length).toBeGreaterThan(10);
  };
  expectDsError(r.errors.garbage, "INVALID_ARGUMENT", DSErrorCode.decode_error);
  expectDsError(r.errors.unknown_group, "NOT_FOUND", DSErrorCode.unknown_group);
  // An anonymous key_packages request: a DS error, not a decode error, so the bytes parsed; anonymous
  // fetches are refused by default (docs/security.md: a registered_client signature or a peer's mutual TLS).
  expect(r.errors.key_packages.detail.type).toBe("error");
  expect(r.errors.key_packages.detail.code).toBe(DSErrorCode.authentication_failed);
  expect(r.errors.key_packages.rpc_code).toBe("UNAUTHENTICATED");
}
