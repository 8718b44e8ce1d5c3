// Client SDK of the MIMI DS: transports, typed DSRequests (DSClient), the
// local ClientService (LocalClientApi) and an MLS member driving both.
export * from "./transport.js";
export * from "./sign.js";
export * from "./errors.js";
export * from "./ds.js";
export * from "./local.js";
export * from "./member.js";
