// Client SDK of the MIMI DS (package export `mimi-ds/client`, docs/sdk.md):
// transports, typed DSRequests (DSClient), the local ClientService
// (LocalClientApi) and its Receiver, MLS clients (MimiClient: one identity,
// many groups; MimiGroup: one group) and the single-group MimiMember facade.
export * from "./transport.js";
export * from "./sign.js";
export * from "./errors.js";
export * from "./ds.js";
export * from "./local.js";
export * from "./receive.js";
export type { CommitOptions, PreparedCommit } from "./group-ops.js";
export * from "./group.js";
export * from "./mimi-client.js";
export * from "./member.js";
export { TsMlsUnpatchedError } from "./ts-mls-check.js";
