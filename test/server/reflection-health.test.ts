// Server reflection (v1, v1alpha), health, buf curl, and registering more services.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as S } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { FanoutService } from "../../gen/mimi/ds/v1/fanout_pb.js";
import { serviceRoute } from "../../src/server/index.js";
import { bufCurl, client, grpcJsClient, type ClientTls } from "../helpers/clients.js";
import { makeDevCa, type DevCa } from "../helpers/devca.js";
import { recordingHandler, startTestServer, type TestServer } from "../helpers/server.js";

let ca: DevCa;
let tls: ClientTls;
let server: TestServer;

const allServices = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
  "mimi.ds.v1.FanoutService",
  "mimi.ds.v1.HubService",
];

beforeAll(async () => {
  ca = await makeDevCa(["hub.example"]);
  tls = { ca: ca.ca };
  server = await startTestServer(ca, "hub.example", recordingHandler(), {
    // A later service registered through the extension point.
    services: [serviceRoute(FanoutService, { acknowledge: () => ({}) })],
  });
});
afterAll(async () => {
  await server.close();
  await ca.cleanup();
});

type Question = v1.ServerReflectionRequest["messageRequest"];

async function askV1(questions: Question[]): Promise<v1.ServerReflectionResponse[]> {
  const refl = client(v1.ServerReflection, "grpc", server.url, tls);
  const out: v1.ServerReflectionResponse[] = [];
  async function* requests() {
    for (const q of questions) yield create(v1.ServerReflectionRequestSchema, { host: "h", messageRequest: q });
  }
  for await (const res of refl.serverReflectionInfo(requests())) out.push(res);
  return out;
}

function fileNames(res: v1.ServerReflectionResponse | v1alpha.ServerReflectionResponse): string[] {
  if (res.messageResponse.case !== "fileDescriptorResponse") throw new Error(`got ${res.messageResponse.case}`);
  return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
}

describe("reflection", () => {
  it("v1 lists every served service, including registered ones", async () => {
    const [res] = await askV1([{ case: "listServices", value: "" }]);
    expect(res?.validHost).toBe("h");
    expect(res?.originalRequest?.messageRequest.case).toBe("listServices");
    if (res?.messageResponse.case !== "listServicesResponse") throw new Error("no list");
    expect(res.messageResponse.value.service.map((s) => s.name)).toEqual(allServices);
  });

  it("v1 finds files by symbol (service, method, message, nested enum) and by name", async () => {
    const answers = await askV1([
      { case: "fileContainingSymbol", value: "mimi.ds.v1.HubService" },
      { case: "fileContainingSymbol", value: "mimi.ds.v1.HubService.Ping" },
      { case: "fileContainingSymbol", value: "mimi.ds.v1.DSErrorDetail" },
      { case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" },
      { case: "fileByFilename", value: "mimi/ds/v1/fanout.proto" },
      { case: "fileByFilename", value: "grpc/reflection/v1alpha/reflection.proto" },
    ]);
    expect(answers.map(fileNames)).toEqual([
      ["mimi/ds/v1/hub.proto"],
      ["mimi/ds/v1/hub.proto"],
      ["mimi/ds/v1/hub.proto"],
      ["grpc/health/v1/health.proto"],
      ["mimi/ds/v1/fanout.proto"],
      ["grpc/reflection/v1alpha/reflection.proto"],
    ]);
    const hub = fromBinary(FileDescriptorProtoSchema, (answers[0]!.messageResponse.value as v1.FileDescriptorResponse).fileDescriptorProto[0]!);
    expect(hub.package).toBe("mimi.ds.v1");
    expect(hub.service[0]?.method.map((m) => m.name)).toEqual(["Submit", "Ping", "HubInfo"]);
  });

  it("v1 answers unknown and empty requests with error_response", async () => {
    const answers = await askV1([
      { case: "fileContainingSymbol", value: "no.such.Symbol" },
      { case: "fileByFilename", value: "nope.proto" },
      { case: "fileContainingExtension", value: create(v1.ExtensionRequestSchema, { containingType: "mimi.ds.v1.PingRequest", extensionNumber: 100 }) },
      { case: undefined },
      { case: "allExtensionNumbersOfType", value: "mimi.ds.v1.PingRequest" },
    ]);
    const codes = answers.map((a) => (a.messageResponse.case === "errorResponse" ? a.messageResponse.value.errorCode : a.messageResponse.case));
    expect(codes).toEqual([Code.NotFound, Code.NotFound, Code.NotFound, Code.InvalidArgument, "allExtensionNumbersResponse"]);
  });

  it("v1alpha answers the same", async () => {
    const refl = client(v1alpha.ServerReflection, "grpc", server.url, tls);
    async function* requests() {
      yield create(v1alpha.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "*" } });
      yield create(v1alpha.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.Health" } });
    }
    const out: v1alpha.ServerReflectionResponse[] = [];
    for await (const res of refl.serverReflectionInfo(requests())) out.push(res);
    if (out[0]?.messageResponse.case !== "listServicesResponse") throw new Error("no list");
    expect(out[0].messageResponse.value.service.map((s) => s.name)).toEqual(allServices);
    expect(fileNames(out[1]!)).toEqual(["grpc/health/v1/health.proto"]);
  });
});

describe("buf curl", () => {
  it("lists methods through reflection (v1 and v1alpha)", async () => {
    for (const protocol of ["grpc-v1", "grpc-v1alpha"]) {
      const out = await bufCurl(["--reflect-protocol", protocol, "--list-methods", server.url], ca.caPath);
      expect(out.trim().split("\n")).toEqual(
        expect.arrayContaining(["mimi.ds.v1.HubService/Ping", "mimi.ds.v1.HubService/Submit", "mimi.ds.v1.FanoutService/Subscribe", "grpc.health.v1.Health/Check"]),
      );
    }
  });

  it("calls Ping and Health/Check without a schema", async () => {
    for (const protocol of ["grpc", "connect", "grpcweb"]) {
      const ping = JSON.parse(await bufCurl(["--protocol", protocol, `${server.url}/mimi.ds.v1.HubService/Ping`], ca.caPath));
      expect(ping).toEqual({ domain: "hub.example" });
    }
    const health = JSON.parse(
      await bufCurl(["--reflect-protocol", "grpc-v1alpha", "-d", '{"service":"mimi.ds.v1.HubService"}', `${server.url}/grpc.health.v1.Health/Check`], ca.caPath),
    );
    expect(health).toEqual({ status: "SERVING" });
  });
});

describe("health", () => {
  it("reports SERVING for the server and each service, NotFound for others", async () => {
    const health = client(Health, "grpc", server.url, tls);
    for (const service of ["", ...allServices]) expect((await health.check({ service })).status).toBe(S.SERVING);
    const err = await health.check({ service: "nope.Service" }).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.NotFound);
    const listed = await health.list({});
    expect(Object.keys(listed.statuses).sort()).toEqual(["", ...allServices]);
  });

  it("Watch says SERVICE_UNKNOWN for unknown services and keeps the stream open", async () => {
    const health = client(Health, "grpc", server.url, tls);
    const abort = new AbortController();
    const it = health.watch({ service: "nope.Service" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await it.next()).value?.status).toBe(S.SERVICE_UNKNOWN);
    abort.abort();
  });

  it("answers grpc-js health checks", async () => {
    const c = grpcJsClient(Health, server.port, tls);
    try {
      const res = await new Promise<{ status: number }>((resolve, reject) =>
        c.Check!({ service: "" }, (err: Error | null, r: { status: number }) => (err ? reject(err) : resolve(r))),
      );
      expect(res.status).toBe(S.SERVING);
    } finally {
      c.close();
    }
  });
});
