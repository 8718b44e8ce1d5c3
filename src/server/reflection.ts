// gRPC server reflection (grpc.reflection.v1 and v1alpha), answered from the
// file descriptors protoc-gen-es embeds in gen/ (connect-node has no reflection
// package). Both versions share one answering core: their messages have the
// same fields and numbers.
import type { DescEnum, DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** Services answered by reflection itself, always served. */
export const reflectionServices: readonly DescService[] = [v1.ServerReflection, v1alpha.ServerReflection];

type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

type Question =
  | { case: "fileByFilename"; value: string }
  | { case: "fileContainingSymbol"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: "allExtensionNumbersOfType"; value: string }
  | { case: "listServices"; value: string }
  | { case: undefined; value?: undefined };

/** Index of the served services' files and every symbol they declare. */
export class ReflectionIndex {
  readonly #services: string[];
  readonly #files = new Map<string, DescFile>(); // by file name, e.g. "mimi/ds/v1/hub.proto"
  readonly #symbols = new Map<string, DescFile>(); // by fully-qualified name
  readonly #messages = new Set<string>();
  readonly #extensions = new Map<string, Map<number, DescFile>>(); // extendee -> number -> file
  readonly #encoded = new Map<string, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.#services = [...new Set(services.map((s) => s.typeName))].sort();
    for (const service of services) this.#addFile(service.file);
  }

  get serviceNames(): readonly string[] {
    return this.#services;
  }

  answer(question: Question): Answer {
    switch (question.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.#services.map((name) => ({ name })) } };
      case "fileByFilename": {
        const file = this.#files.get(question.value);
        return file ? this.#withDependencies(file) : notFound(`file "${question.value}" not found`);
      }
      case "fileContainingSymbol": {
        const file = this.#symbols.get(stripDot(question.value));
        return file ? this.#withDependencies(file) : notFound(`symbol "${question.value}" not found`);
      }
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = question.value;
        const file = this.#extensions.get(stripDot(containingType))?.get(extensionNumber);
        return file
          ? this.#withDependencies(file)
          : notFound(`extension ${extensionNumber} of "${containingType}" not found`);
      }
      case "allExtensionNumbersOfType": {
        const type = stripDot(question.value);
        if (!this.#messages.has(type)) return notFound(`type "${question.value}" not found`);
        const numbers = [...(this.#extensions.get(type)?.keys() ?? [])].sort((a, b) => a - b);
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: type, extensionNumber: numbers } };
      }
      default:
        return {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "no message_request set" },
        };
    }
  }

  /** The file first, then its transitive imports, each once. */
  #withDependencies(file: DescFile): Answer {
    const ordered: DescFile[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile): void => {
      if (seen.has(f.proto.name)) return;
      seen.add(f.proto.name);
      ordered.push(f);
      for (const dep of f.dependencies) visit(dep);
    };
    visit(file);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: ordered.map((f) => this.#encode(f)) } };
  }

  #encode(file: DescFile): Uint8Array {
    let bytes = this.#encoded.get(file.proto.name);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.#encoded.set(file.proto.name, bytes);
    }
    return bytes;
  }

  #addFile(file: DescFile): void {
    if (this.#files.has(file.proto.name)) return;
    this.#files.set(file.proto.name, file);
    for (const dep of file.dependencies) this.#addFile(dep);
    const addEnum = (e: DescEnum): void => {
      this.#symbols.set(e.typeName, file);
    };
    const addMessage = (m: DescMessage): void => {
      this.#symbols.set(m.typeName, file);
      this.#messages.add(m.typeName);
      for (const field of m.fields) this.#symbols.set(`${m.typeName}.${field.name}`, file);
      for (const oneof of m.oneofs) this.#symbols.set(`${m.typeName}.${oneof.name}`, file);
      m.nestedMessages.forEach(addMessage);
      m.nestedEnums.forEach(addEnum);
      for (const ext of m.nestedExtensions) this.#addExtension(ext.typeName, ext.extendee.typeName, ext.number, file);
    };
    file.messages.forEach(addMessage);
    file.enums.forEach(addEnum);
    for (const ext of file.extensions) this.#addExtension(ext.typeName, ext.extendee.typeName, ext.number, file);
    for (const service of file.services) {
      this.#symbols.set(service.typeName, file);
      for (const method of service.methods) this.#symbols.set(`${service.typeName}.${method.name}`, file);
    }
  }

  #addExtension(name: string, extendee: string, number: number, file: DescFile): void {
    this.#symbols.set(name, file);
    let byNumber = this.#extensions.get(extendee);
    if (byNumber === undefined) this.#extensions.set(extendee, (byNumber = new Map()));
    byNumber.set(number, file);
  }
}

function notFound(errorMessage: string): Answer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage } };
}

function stripDot(name: string): string {
  return name.startsWith(".") ? name.slice(1) : name;
}

export function registerReflection(router: ConnectRouter, index: ReflectionIndex): void {
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: index.answer(req.messageRequest),
        });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: index.answer(req.messageRequest),
        });
      }
    },
  });
}
