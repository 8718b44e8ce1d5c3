export { startServer, serviceRoute, defaultMaxRequestBytes } from "./server.js";
export type { RunningServer, ServerOptions, ServiceRoute, TlsMaterial } from "./server.js";
export { requestContext, requestContextKey, firstDnsSan } from "./context.js";
export { statusForDsError } from "./errors.js";
export { HealthRegistry, ServingStatus } from "./health.js";
export { ReflectionIndex } from "./reflection.js";
