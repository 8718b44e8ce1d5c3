// Public API of the wire layer: TLS codecs of every MIMI DS struct, MLS
// structs through ts-mls, extension helpers and the error-code tables.
export * from "./codec.js";
export * from "./errors.js";
export * from "./mls.js";
export * from "./messages.js";
export * from "./extensions.js";
