// Clients for tests: connect-node transports (gRPC, Connect, gRPC-Web), a
// generic @grpc/grpc-js client built from a protobuf-es service descriptor, and
// `buf curl` from node_modules.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import type { DescMethod, DescService, MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

export interface ClientTls {
  readonly ca: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export type TransportKind = "grpc" | "connect" | "connect-h1" | "grpc-web";
export const transportKinds: readonly TransportKind[] = ["grpc", "connect", "connect-h1", "grpc-web"];

export function transport(kind: TransportKind, baseUrl: string, tls: ClientTls): Transport {
  const nodeOptions = { ca: tls.ca, ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}) };
  switch (kind) {
    case "grpc":
      return createGrpcTransport({ baseUrl, nodeOptions });
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions });
    case "connect-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions });
  }
}

export function client<S extends DescService>(service: S, kind: TransportKind, baseUrl: string, tls: ClientTls): Client<S> {
  return createClient(service, transport(kind, baseUrl, tls));
}

/** A @grpc/grpc-js client for any service, serializing with protobuf-es. */
export function grpcJsClient(service: DescService, port: number, tls: ClientTls): grpc.Client & Record<string, Function> {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.name] = methodDefinition(service, method);
  }
  const Ctor = grpc.makeGenericClientConstructor(definition, service.name);
  const creds = grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null);
  return new Ctor(`localhost:${port}`, creds) as grpc.Client & Record<string, Function>;
}

function methodDefinition(service: DescService, method: DescMethod): grpc.MethodDefinition<unknown, unknown> {
  const ser = (schema: DescMethod["input"]) => (m: unknown) =>
    Buffer.from(toBinary(schema, create(schema, m as MessageInitShape<typeof schema>)));
  const de = (schema: DescMethod["input"]) => (b: Buffer) => fromBinary(schema, b);
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: ser(method.input),
    requestDeserialize: de(method.input),
    responseSerialize: ser(method.output),
    responseDeserialize: de(method.output),
  };
}

/** grpc-js unary call as a promise. */
export function grpcJsUnary<T>(c: grpc.Client & Record<string, Function>, method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    c[method]!(req, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}

const execFileP = promisify(execFile);
const bufBin = join(process.cwd(), "node_modules", ".bin", "buf");

/** Runs `buf curl` with the dev CA; resolves with stdout, rejects with stderr. */
export async function bufCurl(args: readonly string[], caPath: string): Promise<string> {
  const { stdout } = await execFileP(bufBin, ["curl", "--cacert", caPath, ...args], { timeout: 60_000 });
  return stdout;
}
