export { startServer, serviceRoute, defaultMaxRequestBytes, DEFAULT_CONNECTION_LIMITS, TLS_CIPHERS } from "./server.js";
export type { ConnectionLimits, ConnectionStats, RunningServer, ServerOptions, ServiceRoute, TlsMaterial } from "./server.js";
export { requestContext, requestContextKey, callTransport, callTransportKey, firstDnsSan, type CallTransport } from "./context.js";
export { statusForDsError } from "./errors.js";
export { HealthRegistry, ServingStatus } from "./health.js";
export { ReflectionIndex } from "./reflection.js";
